//! One writer at a time: the lease a backup or prune run holds on `<prefix>lease.json`.
//!
//! Two runs at once (a Step Functions retry while the first call still runs, a long run
//! meeting the next day's schedule, a manual invoke) would share one checkpoint, and the last
//! to finish could point `latest` at a version the other superseded. So a run that writes
//! first takes the lease (`shared::lease`, S3 conditional writes). It holds until the
//! invocation's deadline plus `LEASE_GRACE_SECONDS`: Lambda ends an invocation by its
//! deadline, so a live run never loses it, and a run killed earlier blocks others only until
//! then. A run finding the lease held waits when it expires before this run's own stop time,
//! and otherwise answers `busy` having changed nothing. Before the manifest and `latest` are
//! written the holder confirms the lease is still its own. [`wait_for`] is the pure rule.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use shared::Error;
use shared::lease::{Body, Lease, Taken};

use crate::store::Store;

/// A lease this run holds.
pub struct RunLease {
    lease: Lease,
    holder: String,
    until: DateTime<Utc>,
}

/// How long to wait for a lease held by `busy` before trying again; `None`: answer `busy`.
/// A lease is waited for only when it expires before `stop_at`, this run's own stop time.
pub fn wait_for(busy: Option<&Body>, now: DateTime<Utc>, until_stop: Duration) -> Option<Duration> {
    let Some(b) = busy else {
        // Released between our write and our read: try again at once.
        return Some(Duration::ZERO);
    };
    let left = (b.expires_at - now).to_std().unwrap_or(Duration::ZERO);
    (left < until_stop).then_some(left + Duration::from_millis(100))
}

/// The wall-clock time `deadline` stands for, plus `grace`.
fn expiry(deadline: Instant, grace: Duration) -> DateTime<Utc> {
    let left = deadline.saturating_duration_since(Instant::now());
    Utc::now() + chrono::Duration::from_std(left + grace).unwrap_or(chrono::Duration::zero())
}

impl RunLease {
    /// Takes the lease until `deadline + grace`, waiting for one that expires before `stop_at`;
    /// `Err(body)` when another live run holds it (its lease as read).
    pub async fn take(
        store: &Store,
        deadline: Instant,
        stop_at: Instant,
        grace: Duration,
    ) -> Result<Result<RunLease, Body>, Error> {
        let holder = uuid::Uuid::new_v4().to_string();
        let until = expiry(deadline, grace);
        let key = store.layout.lease_key();
        loop {
            match shared::lease::acquire(&store.s3, &store.bucket, &key, &holder, until).await? {
                Taken::Held(lease) => {
                    return Ok(Ok(RunLease {
                        lease,
                        holder,
                        until,
                    }));
                }
                Taken::Busy(body) => {
                    let until_stop = stop_at.saturating_duration_since(Instant::now());
                    match (wait_for(body.as_ref(), Utc::now(), until_stop), body) {
                        (Some(wait), body) => {
                            tracing::info!(?wait, holder = ?body.as_ref().map(|b| &b.holder), "waiting for the backup lease");
                            tokio::time::sleep(wait).await;
                        }
                        (None, Some(body)) => return Ok(Err(body)),
                        // wait_for waits for a lease released meanwhile: not reached.
                        (None, None) => {}
                    }
                }
            }
        }
    }

    /// Fails unless the lease is still this run's (checked just before a snapshot is written).
    pub async fn confirm(&mut self, store: &Store) -> Result<(), Error> {
        let (holder, until) = (self.holder.clone(), self.until);
        if self
            .lease
            .confirm(&store.s3, &store.bucket, &holder, until)
            .await?
        {
            return Ok(());
        }
        Err(Error::Rejected(format!(
            "another run took over the backup lease {}; this run writes no snapshot",
            self.lease.key
        )))
    }

    /// Gives the lease back.
    pub async fn release(self, store: &Store) {
        shared::lease::release(&store.s3, &store.bucket, self.lease).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_only_for_a_lease_that_ends_before_this_run_must_stop() {
        let now = Utc::now();
        let held = |secs| Body {
            holder: "other".into(),
            expires_at: now + chrono::Duration::seconds(secs),
        };
        let stop = Duration::from_secs(30);
        assert_eq!(wait_for(None, now, stop), Some(Duration::ZERO));
        assert_eq!(
            wait_for(Some(&held(5)), now, stop),
            Some(Duration::from_millis(5100))
        );
        assert_eq!(wait_for(Some(&held(30)), now, stop), None);
        assert_eq!(wait_for(Some(&held(600)), now, stop), None);
        assert_eq!(
            wait_for(Some(&held(-5)), now, stop),
            Some(Duration::from_millis(100)),
            "an expired lease is taken over on the next try"
        );
    }
}
