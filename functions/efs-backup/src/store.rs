//! The bucket: manifests, the `latest` pointer, the checkpoint and small objects.
//!
//! Every call goes through the one S3 client (`s3`). Objects this module writes carry a
//! SHA-256 checksum that S3 verifies on arrival.

use std::collections::BTreeSet;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::Error;

use crate::manifest::{self, Entry, Header, Layout, Manifest};
use crate::retention::SnapshotRef;

/// The `latest` pointer: the newest complete snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latest {
    pub snapshot_id: String,
    pub manifest_key: String,
    pub manifest_version_id: Option<String>,
}

/// The first line of a checkpoint: the run it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    pub format: String,
    pub snapshot_id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub previous: Option<String>,
    /// Paths whose `files/<path>` this run may have written (every upload and delete marker
    /// it planned, saved before any is made): a stored version there may no longer be current.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub pending: BTreeSet<String>,
    /// The run was started as a rescan: every stored version is checked before reuse.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rescan: bool,
}

/// A manifest as stored (gzip, entries streamed): the name the backup run uses.
pub type StoredManifest = Manifest;

/// The bucket and key layout, with the client.
#[derive(Clone)]
pub struct Store {
    pub s3: Client,
    pub bucket: String,
    pub layout: Layout,
}

/// Base64 SHA-256, as S3's `x-amz-checksum-sha256` takes it.
pub fn b64_sha256(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

impl Store {
    /// An object's bytes (a given version, or the current one); `None` when it does not exist.
    pub async fn get(&self, key: &str, version: Option<&str>) -> Result<Option<Vec<u8>>, Error> {
        self.get_range(key, version, None).await
    }

    /// Like [`Store::get`], optionally only a byte range (`bytes=0-1023`).
    pub async fn get_range(
        &self,
        key: &str,
        version: Option<&str>,
        range: Option<&str>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let res = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_string))
            .set_range(range.map(str::to_string))
            .send()
            .await;
        let out = match res {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(Error::aws("S3", "GetObject", e)),
        };
        let bytes = out.body.collect().await.map_err(|e| {
            Error::Unreachable(format!("S3 GetObject {key}: reading the body failed: {e}"))
        })?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    /// The version id of `key`'s current version (`"null"` when unversioned); `None` when
    /// it does not exist or its current version is a delete marker.
    pub async fn current_version(&self, key: &str) -> Result<Option<String>, Error> {
        let res = self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match res {
            Ok(o) => Ok(Some(o.version_id().unwrap_or("null").to_string())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(Error::aws("S3", "HeadObject", e)),
        }
    }

    /// Writes a small object with a verified SHA-256 checksum; returns its version id.
    pub async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<Option<String>, Error> {
        let checksum = b64_sha256(&bytes);
        let out = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .checksum_sha256(checksum)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| Error::aws("S3", "PutObject", e))?;
        Ok(out.version_id().map(str::to_string))
    }

    /// Deletes the current version of `key` (a delete marker in a versioned bucket).
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.s3
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Error::aws("S3", "DeleteObject", e))?;
        Ok(())
    }

    /// The `latest` pointer, if a snapshot was ever completed.
    pub async fn latest(&self) -> Result<Option<Latest>, Error> {
        let Some(bytes) = self.get(&self.layout.latest_key(), None).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Rejected(format!(
                "{} is not a valid pointer: {e}",
                self.layout.latest_key()
            ))
        })
    }

    /// Points `latest` at a snapshot.
    pub async fn set_latest(&self, latest: &Latest) -> Result<(), Error> {
        let body = serde_json::to_vec_pretty(latest)
            .map_err(|e| Error::Rejected(format!("serialising latest: {e}")))?;
        self.put(&self.layout.latest_key(), body, "application/json")
            .await?;
        Ok(())
    }

    /// Reads a snapshot's manifest (kept compressed, see [`Manifest`]); `None` when there is
    /// no such snapshot.
    pub async fn manifest(&self, id: &str) -> Result<Option<Manifest>, Error> {
        self.manifest_stream(id).await
    }

    /// A snapshot's manifest as stored (gzip), its header decoded: the entries are read as a
    /// stream, in path order, and never all held decoded. `None` when there is no such snapshot.
    pub async fn manifest_stream(&self, id: &str) -> Result<Option<Manifest>, Error> {
        let key = self.layout.manifest_key(id);
        let Some(bytes) = self.get(&key, None).await? else {
            return Ok(None);
        };
        let header = manifest::decode_header(&bytes)
            .map_err(|e| Error::Rejected(format!("manifest {key} is unreadable: {e}")))?;
        Ok(Some(Manifest { key, header, bytes }))
    }

    /// Reads only a manifest's header (a ranged read).
    pub async fn manifest_header(&self, id: &str) -> Result<Option<Header>, Error> {
        let key = self.layout.manifest_key(id);
        let Some(bytes) = self.get_range(&key, None, Some("bytes=0-16383")).await? else {
            return Ok(None);
        };
        manifest::decode_header(&bytes)
            .map(Some)
            .map_err(|e| Error::Rejected(format!("manifest {key} is unreadable: {e}")))
    }

    /// Writes a manifest (after every file it references is stored): `entries` in strictly
    /// increasing path order; returns its version id.
    pub async fn put_manifest<'a>(
        &self,
        header: &Header,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Result<Option<String>, Error> {
        let bytes = manifest::encode(header, entries)
            .map_err(|e| Error::io("compressing the manifest", e))?;
        self.put(
            &self.layout.manifest_key(&header.snapshot_id),
            bytes,
            "application/gzip",
        )
        .await
    }

    /// Every complete snapshot in the bucket (manifests under `snapshots/`).
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotRef>, Error> {
        let mut out = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.layout.snapshots_prefix())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Error::aws("S3", "ListObjectsV2", e))?;
            for o in page.contents() {
                if let Some(id) = o.key().and_then(|k| self.layout.id_of_manifest_key(k))
                    && let Some(created_at) = manifest::parse_snapshot_id(&id)
                {
                    out.push(SnapshotRef { id, created_at });
                }
            }
        }
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }

    /// The checkpoint of an unfinished run, if any.
    pub async fn checkpoint(&self) -> Result<Option<(CheckpointHeader, Vec<Entry>)>, Error> {
        let key = self.layout.checkpoint_key();
        let Some(bytes) = self.get(&key, None).await? else {
            return Ok(None);
        };
        // The checkpoint also lists the paths an interrupted run may have written: without
        // it no stored version can be trusted, so an unreadable one stops the run.
        manifest::decode(&bytes).map(Some).map_err(|e| {
            metrics::counter!("CheckpointUnreadable").increment(1);
            Error::Rejected(format!(
                "the checkpoint s3://{}/{key} is unreadable ({e}); it lists the files an interrupted \
                 run may have replaced, so nothing is backed up without it. Invoke \
                 {{\"action\":\"backup\",\"rescan\":true}} to re-read every file and check every stored \
                 version before reusing it (this replaces the checkpoint)",
                self.bucket
            ))
        })
    }

    /// Saves the progress of a run; returns the checkpoint's version id.
    pub async fn put_checkpoint<'a>(
        &self,
        header: &CheckpointHeader,
        done: impl IntoIterator<Item = &'a Entry>,
    ) -> Result<Option<String>, Error> {
        let bytes = manifest::encode(header, done)
            .map_err(|e| Error::io("compressing the checkpoint", e))?;
        self.put(&self.layout.checkpoint_key(), bytes, "application/gzip")
            .await
    }

    /// Starts a run: writes its empty checkpoint, which also proves the bucket is versioned
    /// (older snapshots live in noncurrent versions). An unversioned bucket is refused and
    /// left as it was.
    pub async fn start_run(
        &self,
        header: &CheckpointHeader,
        allow_unversioned: bool,
    ) -> Result<(), Error> {
        if self.put_checkpoint(header, &[]).await?.is_none() && !allow_unversioned {
            self.delete(&self.layout.checkpoint_key()).await?;
            return Err(Error::Rejected(format!(
                "bucket {} does not have versioning enabled; older snapshots would be lost",
                self.bucket
            )));
        }
        Ok(())
    }
}
