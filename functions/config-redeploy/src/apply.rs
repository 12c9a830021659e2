//! The adapter's write side: the release pointer and the ledgers (ECS deployments go through
//! `shared::ecs`).

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use serde::Serialize;
use shared::Error;
use shared::release::{self, Pointer};

use crate::ledger::{self, Ledger};
use crate::settings::Target;

async fn put_json(
    s3: &Client,
    bucket: &str,
    key: &str,
    value: &impl Serialize,
) -> Result<(), Error> {
    let body =
        serde_json::to_vec_pretty(value).map_err(|e| Error::Partial(format!("{key}: {e}")))?;
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| Error::aws("S3", "PutObject", e))?;
    Ok(())
}

/// Writes a deployment's ledger.
pub async fn put_ledger(s3: &Client, bucket: &str, home: &str, l: &Ledger) -> Result<(), Error> {
    let target = Target {
        cluster: l.cluster.clone(),
        service: l.service.clone(),
    };
    put_json(s3, bucket, &ledger::key(home, &target, &l.deployment_id), l).await
}

/// Makes `pointer` the current release of the configuration under `home`.
pub async fn put_pointer(
    s3: &Client,
    bucket: &str,
    home: &str,
    pointer: &Pointer,
) -> Result<(), Error> {
    put_json(s3, bucket, &release::pointer_key(home), pointer).await
}
