//! The AWS-shaped names and times that Lambda's events and records carry: ARNs of functions,
//! queues and streams in the runtime's region and account, and RFC 3339 timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The region ARNs name when the runtime is not told another (`RuntimeConfig::region`).
pub const DEFAULT_REGION: &str = "us-east-1";
/// The account id ARNs name when the runtime is not told another (`RuntimeConfig::account_id`);
/// twelve zeros, as local AWS emulators use.
pub const DEFAULT_ACCOUNT_ID: &str = "000000000000";

/// `arn:aws:lambda:<region>:<account>:function:<name>`, Lambda's unqualified function ARN.
///
/// # Example
///
/// ```
/// use nimbus_core::util::aws::function_arn;
/// assert_eq!(
///     function_arn("eu-west-1", "123456789012", "orders"),
///     "arn:aws:lambda:eu-west-1:123456789012:function:orders"
/// );
/// ```
pub fn function_arn(region: &str, account_id: &str, name: &str) -> String {
    format!("arn:aws:lambda:{region}:{account_id}:function:{name}")
}

/// `arn:aws:<service>:<region>:<account>:<resource>`, for the ARN of a queue (`sqs`, the
/// queue's name), a stream (`kinesis`, `stream/<name>`) or any other resource.
pub fn resource_arn(service: &str, region: &str, account_id: &str, resource: &str) -> String {
    format!("arn:aws:{service}:{region}:{account_id}:{resource}")
}

/// Whether `region` looks like an AWS region name (`us-east-1`, `eu-central-2`,
/// `us-gov-west-1`): lowercase words joined by dashes, ending in a number.
pub fn is_region(region: &str) -> bool {
    let mut parts = region.split('-').collect::<Vec<_>>();
    let Some(last) = parts.pop() else {
        return false;
    };
    parts.len() >= 2
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Whether `account_id` is twelve digits, as AWS account ids are.
pub fn is_account_id(account_id: &str) -> bool {
    account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit())
}

/// `at` in RFC 3339 with milliseconds, in UTC (`2019-11-14T18:16:05.568Z`), as Lambda's
/// records and S3's events write times. Times before 1970 are written as the epoch.
///
/// # Example
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use nimbus_core::util::aws::rfc3339_millis;
/// let at = UNIX_EPOCH + Duration::from_millis(1_573_755_365_568);
/// assert_eq!(rfc3339_millis(at), "2019-11-14T18:16:05.568Z");
/// ```
pub fn rfc3339_millis(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_date(secs);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The UTC date (year, month, day) of `secs` seconds after the epoch.
fn civil_date(secs: u64) -> (i64, i64, i64) {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, m, d)
}

/// Days since the epoch of the civil (proleptic Gregorian) date `year`-`month`-`day`
/// (H. Hinnant's algorithm); negative before 1970.
///
/// ```
/// use nimbus_core::util::aws::days_from_civil;
/// assert_eq!(days_from_civil(1970, 1, 1), 0);
/// assert_eq!(days_from_civil(2026, 12, 6), 20_793);
/// ```
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The version every invocation runs: nimbus has no published versions or aliases.
pub const FUNCTION_VERSION: &str = "$LATEST";

/// `/aws/lambda/<name>`, the log group Lambda writes a function's logs to.
pub fn log_group_name(name: &str) -> String {
    format!("/aws/lambda/{name}")
}

/// `YYYY/MM/DD/[$LATEST]<32 hex>`, the log stream of one instance (execution environment)
/// created at `at`, as Lambda names it; `random` makes it unique.
///
/// # Example
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use nimbus_core::util::aws::log_stream_name;
/// let at = UNIX_EPOCH + Duration::from_secs(1_573_755_365);
/// assert_eq!(log_stream_name(at, 0xab), "2019/11/14/[$LATEST]000000000000000000000000000000ab");
/// ```
pub fn log_stream_name(at: SystemTime, random: u128) -> String {
    let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (y, m, d) = civil_date(secs);
    format!("{y:04}/{m:02}/{d:02}/[{FUNCTION_VERSION}]{random:032x}")
}

/// `Root=1-<8 hex epoch seconds>-<24 hex>;Parent=<16 hex>;Sampled=0`, an X-Ray trace header
/// in Lambda's shape for an invocation started at `epoch_secs` with request id `id`: the
/// root's 24 hex digits are the id's low 96 bits, the parent a mix of all of it.
///
/// # Example
///
/// ```
/// use nimbus_core::util::aws::trace_header;
/// let header = trace_header(0x5dcd_9b25, 1);
/// assert!(header.starts_with("Root=1-5dcd9b25-000000000000000000000001;Parent="));
/// assert!(header.ends_with(";Sampled=0"));
/// ```
pub fn trace_header(epoch_secs: u64, id: u128) -> String {
    let root = id & ((1u128 << 96) - 1);
    // SplitMix64's finaliser: a parent id that differs for neighbouring request ids.
    let mut parent = (id as u64) ^ ((id >> 64) as u64).rotate_left(32);
    parent = (parent ^ (parent >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    parent = (parent ^ (parent >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    parent ^= parent >> 31;
    format!(
        "Root=1-{:08x}-{root:024x};Parent={parent:016x};Sampled=0",
        epoch_secs & 0xffff_ffff
    )
}

/// Reads an RFC 3339 time, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, as Lambda's records
/// and S3's events carry it (what [`rfc3339_millis`] writes reads back exactly); `None` when it
/// is not such a time or lies before 1970.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
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
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in fraction[..digits].bytes().take(9).enumerate() {
            nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3_600 + om * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3_600 + mi * 60 + s - offset;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_and_accounts() {
        for good in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-10",
        ] {
            assert!(is_region(good), "{good}");
        }
        for bad in [
            "",
            "us",
            "us-east",
            "US-east-1",
            "us--1",
            "us-east-1a",
            "-east-1",
        ] {
            assert!(!is_region(bad), "{bad}");
        }
        assert!(is_account_id("000000000000"));
        assert!(!is_account_id("12345678901"));
        assert!(!is_account_id("12345678901x"));
    }

    #[test]
    fn times_before_the_epoch_are_the_epoch() {
        let before = UNIX_EPOCH - std::time::Duration::from_secs(5);
        assert_eq!(rfc3339_millis(before), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn reads_what_is_written() {
        for ms in [0u64, 1_573_691_884_835, 951_782_400_123, 4_102_444_799_999] {
            let at = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(parse_rfc3339(&rfc3339_millis(at)), Some(at), "{ms}");
        }
        assert_eq!(
            parse_rfc3339("2019-11-14T00:38:04.835Z"),
            Some(UNIX_EPOCH + Duration::from_millis(1_573_691_884_835))
        );
        assert_eq!(
            parse_rfc3339("2019-11-14T01:38:04+01:00"),
            Some(UNIX_EPOCH + Duration::from_secs(1_573_691_884))
        );
        for bad in [
            "",
            "2019-11-14",
            "2019-13-14T00:00:00Z",
            "2019-11-14T00:00:00",
            "1969-12-31T23:59:59Z",
            "2019-11-14T00:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
