//! A limit on wrong tokens at `/api/login`, per client address: after [`MAX_FAILURES`] wrong
//! tokens within [`WINDOW`], that address gets 429 with Retry-After until the oldest failure is
//! older than the window. Guessing a 12-character token at a few tries a minute is hopeless.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens one address may send per [`WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; beyond it the quietest are forgotten (bounded memory).
const MAX_ADDRESSES: usize = 4096;

/// Failures per client address (`None`: the address is not known, e.g. behind a test harness).
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<Option<IpAddr>, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// `Err(seconds to wait)` while `client` has used up its failures.
    pub fn check(&self, client: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = failures.get_mut(&client) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            times.pop_front();
        }
        if times.len() < MAX_FAILURES {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        let wait = WINDOW.saturating_sub(now.duration_since(oldest));
        // Rounded up: a client that waits exactly this long is let through.
        Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    }

    /// Counts a wrong token from `client`.
    pub fn record_failure(&self, client: Option<IpAddr>, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&client) {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < WINDOW)
            });
            if failures.len() >= MAX_ADDRESSES {
                // Still full of active guessers: forget the one that has been quiet the longest.
                let quietest = failures
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied())
                    .map(|(k, _)| *k);
                if let Some(k) = quietest {
                    failures.remove(&k);
                }
            }
        }
        let times = failures.entry(client).or_default();
        times.push_back(now);
        while times.len() > MAX_FAILURES {
            times.pop_front();
        }
    }

    /// A right token clears the address's failures.
    pub fn record_success(&self, client: Option<IpAddr>) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_held_off_after_its_failures_until_the_window_passes() {
        let limiter = LoginLimiter::default();
        let (a, b) = (Some([10, 0, 0, 1].into()), Some([10, 0, 0, 2].into()));
        let start = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(limiter.check(a, start), Ok(()), "try {i}");
            limiter.record_failure(a, start + Duration::from_secs(i as u64));
        }
        let now = start + Duration::from_secs(10);
        assert_eq!(limiter.check(a, now), Err(50));
        // Another address is not affected.
        assert_eq!(limiter.check(b, now), Ok(()));
        // Once the first failure is a window old, one more try is allowed.
        assert_eq!(limiter.check(a, start + WINDOW), Ok(()));
        limiter.record_success(a);
        assert_eq!(limiter.check(a, now), Ok(()));
    }
}
