//! A per-service lease in the config bucket, so concurrent invocations deploy one at a time.
//!
//! The lease is `shared::lease` at `<prefix>.wikiops/lease/<cluster>/<service>.json`; a lease
//! whose holder crashed expires after [`TTL`]. Whoever waited re-reads the service afterwards: the holder's deployment then
//! usually carries its change too.

use aws_sdk_s3::Client;
use chrono::{Duration, Utc};
use shared::Error;
pub use shared::lease::{Lease, release};

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

/// Takes the lease at `key` for `holder` for [`TTL`]; `None` when another live invocation
/// holds it.
pub async fn acquire(
    s3: &Client,
    bucket: &str,
    key: &str,
    holder: &str,
) -> Result<Option<Lease>, Error> {
    match shared::lease::acquire(s3, bucket, key, holder, Utc::now() + TTL).await? {
        shared::lease::Taken::Held(lease) => Ok(Some(lease)),
        shared::lease::Taken::Busy(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_key_is_reserved() {
        let t = Target {
            cluster: "wiki".into(),
            service: "web".into(),
        };
        assert_eq!(key("config/", &t), "config/.wikiops/lease/wiki/web.json");
        assert!(crate::ledger::is_reserved(&key("config/", &t)));
    }
}
