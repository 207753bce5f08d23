//! The one clock of the process: wall time as the engine writes it.
//!
//! Engine events carry `timeNano` (Unix time in nanoseconds); lags, latencies
//! and synthetic events compare against it, so every "now" in those units
//! comes from here. Monotonic durations use `std::time::Instant` directly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time now, in nanoseconds; 0 if the system clock is before 1970.
pub fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// How long ago `time_nano` (Unix nanoseconds) was; zero if it lies in the
/// future (the engine's clock and ours may disagree).
pub fn since_nanos(time_nano: i64) -> Duration {
    Duration::from_nanos(unix_nanos().saturating_sub(time_nano).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020_and_the_future_is_zero_ago() {
        assert!(unix_nanos() > 1_577_836_800_000_000_000);
        assert_eq!(since_nanos(unix_nanos() + 60_000_000_000), Duration::ZERO);
        assert!(since_nanos(unix_nanos() - 2_000_000_000) >= Duration::from_secs(2));
    }
}
