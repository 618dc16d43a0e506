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
