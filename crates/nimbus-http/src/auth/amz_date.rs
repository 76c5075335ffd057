//! SigV4's `X-Amz-Date`: `YYYYMMDD'T'HHMMSS'Z'`, in UTC, read and written as seconds since
//! the epoch.

use std::time::{SystemTime, UNIX_EPOCH};

use nimbus_core::util::aws::days_from_civil;

/// The seconds since the epoch of an `X-Amz-Date` (`20261206T024400Z`); `None` if it is not
/// one, or names a time before 1970.
pub(crate) fn parse(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[9..15].iter().all(u8::is_ascii_digit);
    if !shaped {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    if !valid {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    u64::try_from(secs).ok()
}

/// `at` as an `X-Amz-Date`.
pub(crate) fn format(at: SystemTime) -> String {
    // `2026-12-06T02:44:00.000Z` without its separators and milliseconds.
    let rfc3339 = nimbus_core::util::aws::rfc3339_millis(at);
    let compact: String = rfc3339
        .chars()
        .take(19)
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{compact}Z")
}

/// Seconds since the epoch now.
pub(crate) fn now_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_amz_date_reads_and_writes_as_the_same_instant() {
        // 2026-12-06T02:44:00Z.
        let at = UNIX_EPOCH + Duration::from_secs(1_796_525_040);
        assert_eq!(format(at), "20261206T024400Z");
        assert_eq!(parse("20261206T024400Z"), Some(1_796_525_040));
        assert_eq!(parse("19700101T000000Z"), Some(0));
        assert_eq!(parse("20240229T235959Z"), Some(1_709_251_199));
    }

    #[test]
    fn what_is_not_an_amz_date_is_refused() {
        for bad in [
            "",
            "2026-12-06T02:44:00Z",
            "20261206T024400",
            "20261306T024400Z",
            "20261206T244400Z",
            "19691231T235959Z",
            "2026120aT024400Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
