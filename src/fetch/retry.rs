//! When to try again: exponential backoff with jitter, bounded in count and total time, and the
//! server's own hints (`Retry-After`, `RateLimit: ...;t=N`). Pure functions, no clock.

use std::time::{Duration, SystemTime};

/// Longest single wait, whatever the server asks for.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// How a source is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_retries: u32,
    pub base_delay: Duration,
    /// Total time the retries of one source may take.
    pub max_time: Duration,
}

impl Policy {
    /// The wait before retry number `retry` (0 for the first retry), or `None` when no retry is
    /// left. `elapsed` is the time spent on this source so far; `hint` the server's wait;
    /// `jitter` a number in [0, 1) that spreads clients apart.
    pub fn delay(
        &self,
        retry: u32,
        elapsed: Duration,
        hint: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if retry >= self.max_retries {
            return None;
        }
        let exponential = self.base_delay.saturating_mul(1u32 << retry.min(16)).min(MAX_DELAY);
        // Full jitter on the upper half: between 50% and 100% of the exponential delay.
        let jittered = exponential.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        let delay = hint.map_or(jittered, |h| h.max(jittered)).min(MAX_DELAY);
        (elapsed + delay <= self.max_time).then_some(delay)
    }
}

/// A failure after at least this much new data in the partial file does not use up a retry.
pub const PROGRESS: u64 = 64 << 10;

/// The retries left to one source. A failure that follows progress (the partial file grew by
/// [`PROGRESS`] beyond anything it held before) starts the count again, so a connection that
/// resets every 100 KiB still finishes a large file; `max_time` bounds the time spent waiting
/// and on attempts that got nowhere, so a source that never advances is still given up on.
/// Progress is measured as a high-water mark of the partial file, not bytes received, so a
/// server that restarts the file every time does not count as advancing.
#[derive(Debug, Clone)]
pub struct Budget {
    policy: Policy,
    retries: u32,
    spent: Duration,
    high_water: u64,
}

impl Budget {
    /// `held`: bytes already in the partial file when the source is first tried.
    pub fn new(policy: Policy, held: u64) -> Self {
        Self { policy, retries: 0, spent: Duration::ZERO, high_water: held }
    }

    /// Retries used since the last progress.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// After a failed attempt that took `took` and left `held` bytes in the partial file: the
    /// wait before the next attempt, or `None` when this source is used up.
    pub fn after_failure(
        &mut self,
        took: Duration,
        held: u64,
        hint: Option<Duration>,
        jitter: f64,
    ) -> Option<Duration> {
        if held >= self.high_water.saturating_add(PROGRESS) {
            self.retries = 0;
        } else {
            self.spent += took;
        }
        self.high_water = self.high_water.max(held);
        let delay = self.policy.delay(self.retries, self.spent, hint, jitter)?;
        self.retries += 1;
        self.spent += delay;
        Some(delay)
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `RateLimit: "resolvers";r=0;t=87` (IETF draft, as the Hub sends it): the `t` parameter.
pub fn parse_rate_limit(value: &str) -> Option<Duration> {
    value.split([';', ',']).find_map(|part| {
        let (key, number) = part.trim().split_once('=')?;
        (key.trim() == "t").then(|| number.trim().parse::<u64>().ok().map(Duration::from_secs))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy =
        Policy { max_retries: 5, base_delay: Duration::from_secs(1), max_time: Duration::from_secs(600) };

    #[test]
    fn backoff_doubles_with_jitter_and_stops() {
        assert_eq!(POLICY.delay(0, Duration::ZERO, None, 0.0), Some(Duration::from_millis(500)));
        assert_eq!(POLICY.delay(0, Duration::ZERO, None, 1.0), Some(Duration::from_secs(1)));
        assert_eq!(POLICY.delay(3, Duration::ZERO, None, 1.0), Some(Duration::from_secs(8)));
        assert_eq!(POLICY.delay(5, Duration::ZERO, None, 1.0), None, "count bound");
        let many = Policy { max_retries: 40, ..POLICY };
        assert_eq!(many.delay(30, Duration::ZERO, None, 1.0), Some(MAX_DELAY), "capped");
    }

    #[test]
    fn total_time_bounds_retries() {
        assert_eq!(POLICY.delay(2, Duration::from_secs(598), None, 1.0), None);
        assert_eq!(POLICY.delay(0, Duration::from_secs(599), None, 1.0), Some(Duration::from_secs(1)));
    }

    #[test]
    fn server_hints_lengthen_the_wait_up_to_the_cap() {
        assert_eq!(
            POLICY.delay(0, Duration::ZERO, Some(Duration::from_secs(7)), 0.0),
            Some(Duration::from_secs(7))
        );
        assert_eq!(POLICY.delay(0, Duration::ZERO, Some(Duration::from_secs(3600)), 0.0), Some(MAX_DELAY));
    }

    #[test]
    fn failures_after_progress_do_not_use_up_the_retries() {
        let mut budget = Budget::new(POLICY, 0);
        // A connection that resets every 100 KiB: 10 failures for a 1 MiB file, 5 retries allowed.
        for step in 1..=10u64 {
            let wait = budget.after_failure(Duration::from_millis(50), (step * 100) << 10, None, 1.0);
            assert_eq!(wait, Some(Duration::from_secs(1)), "failure {step}");
        }
    }

    #[test]
    fn failures_without_progress_still_run_out() {
        let mut budget = Budget::new(POLICY, 1 << 20);
        let waits: Vec<_> =
            std::iter::from_fn(|| budget.after_failure(Duration::from_millis(50), 1 << 20, None, 1.0))
                .collect();
        assert_eq!(waits.len(), 5, "{waits:?}");
    }

    #[test]
    fn a_restarting_server_is_not_progress() {
        let mut budget = Budget::new(POLICY, 0);
        // Each attempt starts from zero and gets 200 KiB: the file never grows past that.
        let attempts =
            std::iter::from_fn(|| budget.after_failure(Duration::ZERO, 200 << 10, None, 1.0)).count();
        assert_eq!(attempts, 5, "only the first 200 KiB were progress; then the plain count");
    }

    #[test]
    fn time_without_progress_bounds_the_retries() {
        let policy = Policy { max_retries: 1000, ..POLICY };
        let mut budget = Budget::new(policy, 0);
        let mut attempts = 0;
        while budget.after_failure(Duration::from_secs(30), 0, None, 1.0).is_some() {
            attempts += 1;
        }
        assert!(attempts < 40, "{attempts} attempts of 30 s within a 600 s budget");
    }

    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 25 Nov 2026 12:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 25 Nov 2026 12:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn rate_limit_reset() {
        assert_eq!(parse_rate_limit("\"resolvers\";r=0;t=87"), Some(Duration::from_secs(87)));
        assert_eq!(parse_rate_limit("\"api\";r=10"), None);
        assert_eq!(parse_rate_limit("limit=10, remaining=0, t=5"), Some(Duration::from_secs(5)));
    }
}
