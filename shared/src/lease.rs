//! A lease in an S3 bucket: one holder at a time for a job that several invocations may start.
//!
//! S3 conditional writes make it a mutex: `PutObject` with `If-None-Match: *` creates the lease
//! object only if it does not exist. A lease whose holder crashed is taken over once its
//! `expires_at` has passed, with `If-Match` on its ETag, so only one taker wins. A holder can
//! check, just before a write that must not be made twice, that the lease is still its own
//! ([`Lease::confirm`], `If-Match` on the ETag it wrote). Which lease may be taken over is the
//! pure rule [`expired`]; the rest is the adapter.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Error;

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
    /// The ETag of the lease object as this holder last wrote it.
    pub etag: Option<String>,
}

/// The outcome of [`acquire`].
#[derive(Debug)]
pub enum Taken {
    /// This invocation holds the lease.
    Held(Lease),
    /// Another live invocation holds it (its lease as read; `None` if it was released meanwhile).
    Busy(Option<Body>),
}

/// Whether an S3 call failed because its condition (`If-Match`, `If-None-Match`) did not hold.
pub fn precondition_failed<E: ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    e.raw_response()
        .is_some_and(|r| matches!(r.status().as_u16(), 409 | 412))
        || e.as_service_error()
            .and_then(|s| s.code())
            .is_some_and(|c| c == "PreconditionFailed" || c == "ConditionalRequestConflict")
}

fn body_bytes(holder: &str, expires_at: DateTime<Utc>) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(&Body {
        holder: holder.to_string(),
        expires_at,
    })
    .map_err(|e| Error::Partial(format!("lease: {e}")))
}

/// Takes the lease at `key` for `holder` until `expires_at`, unless another live holder has it.
pub async fn acquire(
    s3: &Client,
    bucket: &str,
    key: &str,
    holder: &str,
    expires_at: DateTime<Utc>,
) -> Result<Taken, Error> {
    let bytes = body_bytes(holder, expires_at)?;
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
        Ok(out) => {
            return Ok(Taken::Held(Lease {
                key: key.into(),
                etag: out.e_tag().map(str::to_string),
            }));
        }
        Err(e) if precondition_failed(&e) => {}
        Err(e) => return Err(Error::aws("S3", "PutObject", e)),
    }
    // Held: by a live invocation, or by one that crashed.
    let current = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        // Released meanwhile: the caller may try again.
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            return Ok(Taken::Busy(None));
        }
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
        return Ok(Taken::Busy(held));
    };
    tracing::warn!(key, previous = ?held.as_ref().map(|b| &b.holder), "taking over an expired lease");
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
        Ok(out) => Ok(Taken::Held(Lease {
            key: key.into(),
            etag: out.e_tag().map(str::to_string),
        })),
        Err(e) if precondition_failed(&e) => Ok(Taken::Busy(held)),
        Err(e) => Err(Error::aws("S3", "PutObject", e)),
    }
}

impl Lease {
    /// Rewrites the lease only if it is still the one this holder wrote (`If-Match`), with a
    /// new expiry; `false` when another invocation has taken it over.
    pub async fn confirm(
        &mut self,
        s3: &Client,
        bucket: &str,
        holder: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let Some(etag) = self.etag.clone() else {
            return Ok(true);
        };
        let put = s3
            .put_object()
            .bucket(bucket)
            .key(&self.key)
            .content_type("application/json")
            .if_match(etag)
            .body(ByteStream::from(body_bytes(holder, expires_at)?))
            .send()
            .await;
        match put {
            Ok(out) => {
                self.etag = out.e_tag().map(str::to_string);
                Ok(true)
            }
            Err(e) if precondition_failed(&e) => Ok(false),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.code() == Some("NoSuchKey")) =>
            {
                Ok(false)
            }
            Err(e) => Err(Error::aws("S3", "PutObject", e)),
        }
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
    use chrono::Duration;

    #[test]
    fn a_lease_expires_at_its_time_and_an_unreadable_one_is_expired() {
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
