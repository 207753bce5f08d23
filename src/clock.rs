//! The one clock of the process: wall time as the engine writes it.
//!
//! Engine events carry `timeNano` (Unix time in nanoseconds); lags, latencies
//! and synthetic events compare against it, so every "now" in those units
//! comes from here, and so does the one RFC 3339 form (with nanoseconds)
//! that audit records and notifications write. Monotonic durations use
//! `std::time::Instant` directly.

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

/// RFC 3339 UTC with nanoseconds, from Unix nanoseconds.
pub fn rfc3339_nanos(time_nano: i64) -> String {
    let secs = time_nano.div_euclid(1_000_000_000);
    let nanos = time_nano.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_nanos() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            rfc3339_nanos(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    #[test]
    fn now_is_after_2020_and_the_future_is_zero_ago() {
        assert!(unix_nanos() > 1_577_836_800_000_000_000);
        assert_eq!(since_nanos(unix_nanos() + 60_000_000_000), Duration::ZERO);
        assert!(since_nanos(unix_nanos() - 2_000_000_000) >= Duration::from_secs(2));
    }
}
