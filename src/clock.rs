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
    // Digits written in place, not through `format!`: every audit record
    // and container view entry takes one (2.3 % of the handlers' thread at
    // 90 k events/s, 0.7 % since). An i64 of nanoseconds spans the years
    // 1677 to 2262, so every field has its fixed width.
    let [year, month, day, hour, minute, second, nanos] = civil(time_nano);
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    let fields = [
        (0..4, year),
        (5..7, month),
        (8..10, day),
        (11..13, hour),
        (14..16, minute),
        (17..19, second),
        (20..29, nanos),
    ];
    for (at, value) in fields {
        let mut v = value.unsigned_abs();
        for digit in out[at].iter_mut().rev() {
            *digit = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// Year, month, day, hour, minute, second and nanosecond (UTC) of Unix
/// nanoseconds.
fn civil(time_nano: i64) -> [i64; 7] {
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
    [
        year,
        month,
        day,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        nanos,
    ]
}

/// Unix nanoseconds from RFC 3339 (`2026-11-23T10:00:00Z`, with optional
/// fractional seconds and a `Z` or `±HH:MM` offset); None if it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let end = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        if end == start {
            return None;
        }
        let digits = &s[start..end.min(start + 9)];
        nanos = digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32);
        i = end;
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && matches!(&tz[..1], "+" | "-") && &tz[3..4] == ":" => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let minutes = h * 60 + m;
            if &tz[..1] == "-" { -minutes } else { minutes }
        }
        _ => return None,
    };
    // Howard Hinnant's days-from-civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    // Beyond what i64 nanoseconds hold (after 2262): the far future.
    Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_back() {
        for t in [0, 1_700_000_000_123_456_789, 951_782_400_000_000_001] {
            assert_eq!(parse_rfc3339(&rfc3339_nanos(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.5+01:00"),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000_000_000)
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20.Z",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_are_written_as_format_writes_them_over_the_whole_range() {
        let reference = |t: i64| {
            let [year, month, day, hour, minute, second, nanos] = civil(t);
            format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z")
        };
        let mut t: i64 = 0x2545_f491_4f6c_dd1d;
        let mut seen = vec![i64::MIN, i64::MAX, -1, 0, 1, 999_999_999];
        for _ in 0..20_000 {
            // xorshift: spread over the whole i64 range.
            t ^= t << 13;
            t ^= t >> 7;
            t ^= t << 17;
            seen.push(t);
        }
        for t in seen {
            assert_eq!(rfc3339_nanos(t), reference(t), "at {t}");
        }
    }

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
