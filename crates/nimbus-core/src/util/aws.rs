//! The AWS-shaped names and times that Lambda's events and records carry: ARNs of functions,
//! queues and streams in the runtime's region and account, and RFC 3339 timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

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
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
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
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        since.subsec_millis()
    )
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
}
