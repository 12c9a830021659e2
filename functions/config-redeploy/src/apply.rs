//! The adapter's write side: ledgers, restores (ECS deployments go through `shared::ecs`).

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::MetadataDirective;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use shared::Error;

use crate::ledger::{self, Ledger, META_ROLLBACK_FOR, META_ROLLBACK_OF};
use crate::observe;
use crate::rollback::Action;
use crate::settings::Target;

/// Characters kept as is in a `CopySource` key (everything else is percent-encoded).
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Writes a deployment's ledger.
pub async fn put_ledger(s3: &Client, bucket: &str, home: &str, l: &Ledger) -> Result<(), Error> {
    let target = Target {
        cluster: l.cluster.clone(),
        service: l.service.clone(),
    };
    let body = serde_json::to_vec_pretty(l)
        .map_err(|e| Error::Partial(format!("ledger of {}: {e}", l.deployment_id)))?;
    s3.put_object()
        .bucket(bucket)
        .key(ledger::key(home, &target, &l.deployment_id))
        .content_type("application/json")
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| Error::aws("S3", "PutObject", e))?;
    Ok(())
}

/// Puts an object back as `action` says, marking a copied version with what it undid.
///
/// Returns the new current version id (`None` after a delete).
pub async fn restore(
    s3: &Client,
    bucket: &str,
    key: &str,
    action: &Action,
    bad_version: Option<&str>,
    failed_deployment: &str,
) -> Result<Option<String>, Error> {
    match action {
        Action::Delete => {
            s3.delete_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| Error::aws("S3", "DeleteObject", e))?;
            Ok(None)
        }
        Action::Copy { version_id } => {
            let source = observe::head_version(s3, bucket, key, version_id).await?;
            let mut metadata = source.metadata;
            metadata.insert(
                META_ROLLBACK_OF.into(),
                bad_version.unwrap_or("deleted").into(),
            );
            metadata.insert(META_ROLLBACK_FOR.into(), failed_deployment.into());
            let copy_source = format!(
                "{bucket}/{}?versionId={}",
                utf8_percent_encode(key, COPY_SOURCE),
                utf8_percent_encode(version_id, NON_ALPHANUMERIC)
            );
            let out = s3
                .copy_object()
                .bucket(bucket)
                .key(key)
                .copy_source(copy_source)
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(metadata))
                .set_content_type(source.content_type)
                .send()
                .await
                .map_err(|e| Error::aws("S3", "CopyObject", e))?;
            Ok(out.version_id().map(str::to_string))
        }
    }
}
