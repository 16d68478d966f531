//! One retry-with-backoff helper for every transient failure (S3 5xx, lock timeouts, LOADING).

use std::future::Future;
use std::time::Duration;

/// Errors that know whether trying again may help.
pub trait Retryable {
    /// True when the same call may succeed later (timeouts, throttling, 5xx).
    fn is_retryable(&self) -> bool;
}

/// Exponential backoff, optionally with full jitter. Without jitter the delays are exact (so
/// tests with a paused clock are); with it each delay is drawn uniformly from zero to the
/// exponential delay, as the AWS SDKs do, so clients that failed together do not retry
/// together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Attempts in total, including the first.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial: Duration,
    /// Upper bound for one delay.
    pub max_delay: Duration,
    /// Growth factor per attempt.
    pub factor: f64,
    /// Draw each delay uniformly from zero to [`Backoff::delay`] (full jitter).
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            max_attempts: 5,
            initial: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            factor: 2.0,
            jitter: false,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.saturating_sub(1) as i32);
        let d = self.initial.as_secs_f64() * exp;
        Duration::from_secs_f64(d.min(self.max_delay.as_secs_f64()))
    }

    /// The pause after failed attempt number `attempt`: [`Backoff::delay`], or with
    /// [`Backoff::jitter`] a uniform draw between zero and it.
    pub fn pause(&self, attempt: u32) -> Duration {
        let d = self.delay(attempt);
        if self.jitter {
            d.mul_f64(rand::random::<f64>())
        } else {
            d
        }
    }
}

/// Runs `op` until it succeeds, fails with a non-retryable error, or attempts run out.
/// `on_retry` is told about each retried failure (for logging or progress).
pub async fn retry<T, E, F, Fut>(
    backoff: Backoff,
    mut op: F,
    mut on_retry: impl FnMut(u32, &E),
) -> Result<T, E>
where
    E: Retryable,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < backoff.max_attempts => {
                on_retry(attempt, &e);
                tokio::time::sleep(backoff.pause(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, PartialEq)]
    struct E(bool);
    impl Retryable for E {
        fn is_retryable(&self) -> bool {
            self.0
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_then_succeeds() {
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let r = retry(
            Backoff::default(),
            |_| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move { if n < 2 { Err(E(true)) } else { Ok(n) } }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(r, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // 200 ms + 400 ms of (virtual) backoff
        assert_eq!(start.elapsed(), Duration::from_millis(600));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_on_permanent_error_and_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let r: Result<(), E> = retry(
            Backoff::default(),
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(E(false)) }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(r, Err(E(false)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let calls = AtomicU32::new(0);
        let r: Result<(), E> = retry(
            Backoff {
                max_attempts: 3,
                ..Backoff::default()
            },
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(E(true)) }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(r, Err(E(true)));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn jitter_draws_each_pause_between_zero_and_the_delay() {
        let b = Backoff {
            jitter: true,
            ..Backoff::default()
        };
        let pauses: Vec<Duration> = (0..200).map(|_| b.pause(3)).collect();
        assert!(pauses.iter().all(|p| *p <= Duration::from_millis(800)));
        // Spread out, not one value.
        let min = pauses.iter().min().unwrap();
        let max = pauses.iter().max().unwrap();
        assert!(*max - *min > Duration::from_millis(200), "{min:?}..{max:?}");
        assert_eq!(Backoff::default().pause(3), Duration::from_millis(800));
    }

    #[test]
    fn delay_is_capped() {
        let b = Backoff::default();
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(2), Duration::from_millis(400));
        assert_eq!(b.delay(20), Duration::from_secs(10));
    }
}
