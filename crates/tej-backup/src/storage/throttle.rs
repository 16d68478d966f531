//! The client-side send rate of the S3 store's adaptive retry mode (`AWS_RETRY_MODE=adaptive`).
//!
//! Until the server throttles, requests go out unpaced. After a throttling reply (`SlowDown`,
//! `503`, `429`, `Throttling...`) every request of the store waits for a token from a bucket
//! refilled at the allowed rate, which drops to 70 % of the rate requests were sent at in the
//! last second (at least [`MIN_RATE`]). Each success raises the allowed rate by a tenth; once
//! it is twice the rate requests are asked for, pacing stops. This is the multiplicative
//! decrease, gradual increase that the AWS SDKs' adaptive mode uses (they grow along a cubic
//! curve), so one store backs off as a whole instead of each request retrying on its own.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The lowest allowed rate, in requests per second.
pub(crate) const MIN_RATE: f64 = 0.5;
/// The share of the measured rate kept after a throttling reply.
const DECREASE: f64 = 0.7;
/// Growth of the allowed rate per success, as a share of it.
const INCREASE: f64 = 0.1;

#[derive(Debug)]
struct State {
    /// Pacing is on (a throttling reply came, and the rate has not recovered).
    paced: bool,
    /// The allowed rate, in requests per second.
    rate: f64,
    /// Tokens in the bucket (at most one: no bursts while paced).
    tokens: f64,
    refilled: Instant,
    /// When the requests of the last second were sent.
    sent: VecDeque<Instant>,
}

/// A store's send rate (see the module docs).
#[derive(Debug)]
pub(crate) struct SendRate {
    state: Mutex<State>,
}

impl SendRate {
    pub(crate) fn new() -> SendRate {
        SendRate {
            state: Mutex::new(State {
                paced: false,
                rate: f64::INFINITY,
                tokens: 1.0,
                refilled: Instant::now(),
                sent: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a request may be sent, and counts it as sent.
    pub(crate) async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.lock();
                let now = Instant::now();
                while s
                    .sent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1))
                {
                    s.sent.pop_front();
                }
                if !s.paced {
                    s.sent.push_back(now);
                    return;
                }
                let elapsed = now.duration_since(s.refilled).as_secs_f64();
                s.tokens = (s.tokens + elapsed * s.rate).min(1.0);
                s.refilled = now;
                if s.tokens >= 1.0 {
                    s.tokens -= 1.0;
                    s.sent.push_back(now);
                    return;
                }
                Duration::from_secs_f64((1.0 - s.tokens) / s.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// A throttling reply: the allowed rate drops below what was just sent.
    pub(crate) fn throttled(&self) {
        let mut s = self.lock();
        let measured = s.sent.len().max(1) as f64;
        let base = if s.paced {
            s.rate.min(measured)
        } else {
            measured
        };
        s.rate = (base * DECREASE).max(MIN_RATE);
        if !s.paced {
            s.paced = true;
            s.tokens = 0.0;
            s.refilled = Instant::now();
        }
    }

    /// A reply that was not throttling: the allowed rate grows; pacing ends once it is well
    /// above what is asked for.
    pub(crate) fn succeeded(&self) {
        let mut s = self.lock();
        if !s.paced {
            return;
        }
        s.rate += (s.rate * INCREASE).max(MIN_RATE * INCREASE);
        let asked = s.sent.len().max(1) as f64;
        if s.rate >= 2.0 * asked {
            s.paced = false;
            s.rate = f64::INFINITY;
        }
    }

    /// The allowed rate while paced (`None` when requests are not paced).
    #[cfg(test)]
    pub(crate) fn allowed(&self) -> Option<f64> {
        let s = self.lock();
        s.paced.then_some(s.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn unpaced_until_throttled_then_paced_then_recovering() {
        let r = SendRate::new();
        let start = Instant::now();
        for _ in 0..20 {
            r.acquire().await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "no pacing before throttling"
        );
        assert_eq!(r.allowed(), None);

        // 20 requests in the last second, then a throttle: 14 per second allowed.
        r.throttled();
        assert_eq!(r.allowed(), Some(14.0));
        let start = Instant::now();
        for _ in 0..14 {
            r.acquire().await;
        }
        let paced = start.elapsed();
        assert!(
            paced >= Duration::from_millis(990) && paced <= Duration::from_millis(1010),
            "{paced:?}"
        );
        // Further throttles keep lowering it, never below the floor.
        for _ in 0..50 {
            r.throttled();
        }
        assert_eq!(r.allowed(), Some(MIN_RATE));
        // Successes raise it; pacing ends once it is twice what is asked for.
        let mut grew = MIN_RATE;
        for _ in 0..3 {
            r.succeeded();
            let now = r.allowed().unwrap();
            assert!(now > grew);
            grew = now;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for _ in 0..100 {
            r.succeeded();
        }
        assert_eq!(r.allowed(), None, "recovered");
    }
}
