//! The minimum-rate guard: a transfer that stays below `min_rate` for a whole window is
//! treated as a stall, so an origin that drips a few bytes just often enough to beat
//! `stall_timeout` is abandoned and retried (the resume keeps its bytes). Pure: the caller
//! passes the clock.

use std::time::{Duration, Instant};

/// Measures one response body.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    /// Bytes per second; 0 turns the guard off.
    min_rate: u64,
    window: Duration,
    since: Instant,
    bytes: u64,
}

/// The transfer was too slow for a whole window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooSlow {
    /// Bytes per second over the window.
    pub rate: u64,
    pub min_rate: u64,
    pub window: Duration,
}

impl Pace {
    pub(crate) fn new(min_rate: u64, window: Duration, now: Instant) -> Self {
        Self { min_rate, window, since: now, bytes: 0 }
    }

    /// Counts `bytes` received at `now`; an error when the window that just ended was too slow.
    pub(crate) fn record(&mut self, bytes: u64, now: Instant) -> Result<(), TooSlow> {
        self.bytes += bytes;
        let elapsed = now.saturating_duration_since(self.since);
        if self.min_rate == 0 || elapsed < self.window {
            return Ok(());
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let rate = (self.bytes as f64 / elapsed.as_secs_f64()) as u64;
        if rate < self.min_rate {
            return Err(TooSlow { rate, min_rate: self.min_rate, window: self.window });
        }
        self.since = now;
        self.bytes = 0;
        Ok(())
    }
}

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "too slow: {}/s over {}, below min_rate {}/s",
            bytesize::ByteSize(self.rate),
            humantime::format_duration(self.window),
            bytesize::ByteSize(self.min_rate)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_drip_below_the_rate_fails_once_the_window_is_over() {
        let start = Instant::now();
        let mut pace = Pace::new(1024, MINUTE, start);
        // 10 bytes every 20 s: never silent for 30 s, far below 1 KiB/s.
        for step in 1..3 {
            assert_eq!(pace.record(10, start + Duration::from_secs(20 * step)), Ok(()));
        }
        let err = pace.record(10, start + MINUTE).unwrap_err();
        assert_eq!(err.rate, 0);
        assert!(err.to_string().contains("below min_rate 1.0 KiB/s"), "{err}");
    }

    #[test]
    fn a_fast_transfer_passes_window_after_window() {
        let start = Instant::now();
        let mut pace = Pace::new(1024, MINUTE, start);
        for second in 1..=600u64 {
            assert_eq!(pace.record(4096, start + Duration::from_secs(second)), Ok(()));
        }
    }

    #[test]
    fn each_window_is_judged_on_its_own() {
        let start = Instant::now();
        let mut pace = Pace::new(1024, MINUTE, start);
        pace.record(10 << 20, start + MINUTE).unwrap();
        // A burst in the first window does not pay for a second window of nothing.
        assert!(pace.record(1, start + 2 * MINUTE).is_err());
    }

    #[test]
    fn zero_turns_the_guard_off() {
        let start = Instant::now();
        let mut pace = Pace::new(0, MINUTE, start);
        assert_eq!(pace.record(1, start + 100 * MINUTE), Ok(()));
    }
}
