//! A per-service lease in the config bucket, so concurrent invocations deploy one at a time.
//!
//! S3 conditional writes make it a mutex: `PutObject` with `If-None-Match: *` creates
//! `<prefix>.wikiops/lease/<cluster>/<service>.json` only if it does not exist. A lease whose
//! holder crashed expires after [`TTL`] and is taken over with `If-Match` on its ETag, so only
//! one taker wins. Whoever waited re-reads the service afterwards: the holder's deployment then
//! usually carries its change too.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use shared::Error;

use crate::ledger::RESERVED_PREFIX;
use crate::settings::Target;

/// How long a lease protects its holder (longer than the function's timeout).
pub const TTL: Duration = Duration::seconds(120);

/// The lease key of a service whose configuration lives under `prefix`.
pub fn key(prefix: &str, target: &Target) -> String {
    format!(
        "{prefix}{RESERVED_PREFIX}lease/{}/{}.json",
        target.cluster, target.service
    )
}

/// The lease object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    pub holder: String,
    pub expires_at: DateTime<Utc>,
}

/// Whether a lease with this content (unreadable: `None`) may be taken over at `now`.
pub fn expired(body: Option<&Body>, now: DateTime<Utc>) -> bool {
    body.is_none_or(|b| b.expires_at <= now)
}

/// A lease this invocation holds.
#[derive(Debug)]
pub struct Lease {
    pub key: String,
}

fn precondition_failed<E: ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 412)
        || e.as_service_error()
            .and_then(|s| s.code())
            .is_some_and(|c| c == "PreconditionFailed")
}

/// Takes the lease at `key` for `holder`; `None` when another live invocation holds it.
pub async fn acquire(
    s3: &Client,
    bucket: &str,
    key: &str,
    holder: &str,
) -> Result<Option<Lease>, Error> {
    let body = Body {
        holder: holder.to_string(),
        expires_at: Utc::now() + TTL,
    };
    let bytes = serde_json::to_vec(&body).map_err(|e| Error::Partial(format!("lease: {e}")))?;
    let put = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .if_none_match("*")
        .body(ByteStream::from(bytes.clone()))
        .send()
        .await;
    match put {
        Ok(_) => return Ok(Some(Lease { key: key.into() })),
        Err(e) if precondition_failed(&e) => {}
        Err(e) => return Err(Error::aws("S3", "PutObject", e)),
    }
    // Held: by a live invocation, or by one that crashed.
    let current = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        // Released meanwhile: the caller tries again.
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
        Err(e) => return Err(Error::aws("S3", "GetObject", e)),
    };
    let etag = current.e_tag().map(str::to_string);
    let held: Option<Body> = current
        .body
        .collect()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b.into_bytes()).ok());
    let (true, Some(etag)) = (expired(held.as_ref(), Utc::now()), etag) else {
        return Ok(None);
    };
    tracing::warn!(key, previous = ?held.map(|b| b.holder), "taking over an expired lease");
    let put = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .if_match(etag)
        .body(ByteStream::from(bytes))
        .send()
        .await;
    match put {
        Ok(_) => Ok(Some(Lease { key: key.into() })),
        Err(e) if precondition_failed(&e) => Ok(None),
        Err(e) => Err(Error::aws("S3", "PutObject", e)),
    }
}

/// Gives the lease back (a failure only delays others until it expires).
pub async fn release(s3: &Client, bucket: &str, lease: Lease) {
    if let Err(e) = s3
        .delete_object()
        .bucket(bucket)
        .key(&lease.key)
        .send()
        .await
    {
        let e = Error::aws("S3", "DeleteObject", e);
        tracing::warn!(key = lease.key, error = %e, "lease not released; it expires by itself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_expiry() {
        let t = Target {
            cluster: "wiki".into(),
            service: "web".into(),
        };
        assert_eq!(key("config/", &t), "config/.wikiops/lease/wiki/web.json");
        assert!(crate::ledger::is_reserved(&key("config/", &t)));
        let now = Utc::now();
        let body = |secs| Body {
            holder: "x".into(),
            expires_at: now + Duration::seconds(secs),
        };
        assert!(!expired(Some(&body(1)), now));
        assert!(expired(Some(&body(0)), now));
        assert!(expired(Some(&body(-1)), now));
        assert!(expired(None, now), "an unreadable lease is taken over");
    }
}
