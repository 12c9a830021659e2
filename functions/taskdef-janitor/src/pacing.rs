//! Client-side token buckets (governor's GCRA) and the invocation deadline.
//!
//! ECS throttles per account in buckets shared with deploys; the janitor keeps its own calls
//! under the same figures so it never causes the throttling a deploy would then suffer.
//! Time is tokio's clock: real in Lambda, paused and auto-advanced in tests and in the
//! benchmark, which makes the simulated wall time exact.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

/// A token bucket's refill rate and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    fn quota(&self) -> Quota {
        let period = Duration::from_secs_f64(1.0 / self.per_second).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        // `with_period` is `None` only for a zero period, excluded above.
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

/// governor's clock on top of tokio's, so paused test time drives the buckets too.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

/// The invocation ran out of time: the call was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfTime;

/// One token bucket.
pub struct Bucket {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>,
    clock: TokioClock,
    waited_ns: AtomicU64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: Rate) -> Bucket {
        let clock = TokioClock {
            origin: Instant::now(),
        };
        Bucket {
            limiter: RateLimiter::direct_with_clock(rate.quota(), clock),
            clock,
            waited_ns: AtomicU64::new(0),
        }
    }

    /// Takes one token, waiting for it unless it would only come after `stop_at`.
    pub async fn take(&self, stop_at: Instant) -> Result<(), OutOfTime> {
        loop {
            if Instant::now() >= stop_at {
                return Err(OutOfTime);
            }
            match self.limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if Instant::now() + wait >= stop_at {
                        return Err(OutOfTime);
                    }
                    self.waited_ns
                        .fetch_add(wait.as_nanos() as u64, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Takes one token if there is one now (a server-side bucket, in simulations).
    pub fn try_take(&self) -> bool {
        self.limiter.check().is_ok()
    }

    /// Total time spent waiting for tokens.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_ns.load(Ordering::Relaxed))
    }
}

/// The three ECS buckets the janitor draws from.
pub struct Pacer {
    /// List*/Describe* calls.
    pub read: Bucket,
    /// DeregisterTaskDefinition.
    pub modify: Bucket,
    /// DeleteTaskDefinitions.
    pub delete: Bucket,
}

impl Pacer {
    pub fn new(read: Rate, modify: Rate, delete: Rate) -> Pacer {
        Pacer {
            read: Bucket::new(read),
            modify: Bucket::new(modify),
            delete: Bucket::new(delete),
        }
    }
}

/// When to stop starting calls.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// Discovery, descriptions and deregistrations stop here …
    pub producers: Instant,
    /// … and the last deletions are flushed until here.
    pub flush: Instant,
}

impl Deadline {
    /// Stops `margin` before `remaining` from now; producers stop one deletion token earlier
    /// (at most 2 s) so queued deletions can still be flushed.
    pub fn new(remaining: Duration, margin: Duration, delete: Rate) -> Deadline {
        let now = Instant::now();
        let flush = now + remaining.saturating_sub(margin);
        let token = Duration::from_secs_f64(1.0 / delete.per_second).min(Duration::from_secs(2));
        Deadline {
            producers: flush.checked_sub(token).unwrap_or(now).max(now),
            flush,
        }
    }

    /// No deadline worth speaking of (a day).
    pub fn far() -> Deadline {
        let t = Instant::now() + Duration::from_secs(86_400);
        Deadline {
            producers: t,
            flush: t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_paces_at_its_rate_after_the_burst() {
        let bucket = Bucket::new(Rate {
            per_second: 1.0,
            burst: 5,
        });
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        let mut times = vec![];
        for _ in 0..8 {
            bucket.take(far).await.unwrap();
            times.push((Instant::now() - start).as_millis());
        }
        assert_eq!(times, vec![0, 0, 0, 0, 0, 1000, 2000, 3000]);
        assert_eq!(bucket.waited(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rates_and_refill_while_idle() {
        let bucket = Bucket::new(Rate {
            per_second: 20.0,
            burst: 50,
        });
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        for _ in 0..70 {
            bucket.take(far).await.unwrap();
        }
        // 50 at once, then 20 more at 20/s.
        assert_eq!((Instant::now() - start).as_millis(), 1000);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let t = Instant::now();
        for _ in 0..50 {
            bucket.take(far).await.unwrap();
        }
        assert_eq!(
            Instant::now(),
            t,
            "a refilled bucket gives its burst at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_after_the_deadline_is_refused_without_waiting() {
        let bucket = Bucket::new(Rate {
            per_second: 0.5,
            burst: 1,
        });
        let start = Instant::now();
        let stop = start + Duration::from_secs(1);
        assert_eq!(bucket.take(stop).await, Ok(()));
        assert_eq!(bucket.take(stop).await, Err(OutOfTime));
        assert_eq!(
            Instant::now(),
            start,
            "did not sleep towards a token it could not use"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(bucket.take(stop).await, Err(OutOfTime), "past the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_keeps_a_flush_window_for_deletions() {
        let now = Instant::now();
        let rate = Rate {
            per_second: 1.0,
            burst: 5,
        };
        let d = Deadline::new(Duration::from_secs(60), Duration::from_secs(5), rate);
        assert_eq!(d.flush - now, Duration::from_secs(55));
        assert_eq!(d.producers - now, Duration::from_secs(54));
        let d = Deadline::new(Duration::from_secs(3), Duration::from_secs(5), rate);
        assert_eq!((d.flush, d.producers), (now, now));
    }
}
