//! IAM's wildcard matching: `StringLike` (`*` any run of characters, `?` exactly one) over a
//! whole string, and `ArnLike` over each of an ARN's six colon-separated components.

/// Whether `text` matches `pattern`, where `*` matches any run of characters (also none) and
/// `?` exactly one. Case-sensitive, as IAM's `StringLike` is.
pub fn like(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // The position after the last `*` seen, and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi + 1, ti));
            pi += 1;
        } else if let Some((after, at)) = star {
            // Let the last `*` swallow one more character and try again.
            pi = after;
            ti = at + 1;
            star = Some((after, at + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `arn` matches `pattern` as IAM's `ArnLike` does: both are split into their six
/// colon-separated components (`arn:partition:service:region:account:resource`, the resource
/// keeping any further colons) and each pair is matched with [`like`]. A `pattern` of `*`
/// matches any ARN; a value that is not an ARN matches nothing else.
pub fn arn_like(pattern: &str, arn: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let mut patterns = pattern.splitn(6, ':');
    let mut parts = arn.splitn(6, ':');
    let mut components = 0;
    loop {
        match (patterns.next(), parts.next()) {
            (Some(p), Some(a)) => {
                if !like(p, a) {
                    return false;
                }
                components += 1;
            }
            (None, None) => return components == 6,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_question_mark() {
        assert!(like("*", ""));
        assert!(like("a*c", "abbbc"));
        assert!(like("a*c", "ac"));
        assert!(!like("a*c", "ab"));
        assert!(like("a?c", "abc"));
        assert!(!like("a?c", "ac"));
        assert!(like("*-prod-?", "x-prod-1"));
        assert!(!like("*-prod-?", "x-prod-12"));
        assert!(like("a*b*c", "a_b_b_c"));
        assert!(!like("Bucket", "bucket"), "case-sensitive");
    }

    #[test]
    fn arn_components_are_matched_one_by_one() {
        let arn = "arn:aws:s3:::photos-2026";
        assert!(arn_like("arn:aws:s3:::photos-*", arn));
        assert!(arn_like("arn:aws:s3:::photos-202?", arn));
        assert!(!arn_like("arn:aws:s3:::videos-*", arn));
        assert!(arn_like(
            "arn:aws:sqs:*:123456789012:jobs",
            "arn:aws:sqs:eu-west-1:123456789012:jobs"
        ));
        // A `*` within one component does not reach into the next.
        assert!(!arn_like(
            "arn:aws:*:123456789012:jobs",
            "arn:aws:sqs:eu-west-1:123456789012:jobs"
        ));
        // The resource keeps its colons.
        assert!(arn_like(
            "arn:aws:lambda:us-east-1:123456789012:function:*",
            "arn:aws:lambda:us-east-1:123456789012:function:f:prod"
        ));
        assert!(arn_like("*", "anything"));
        assert!(!arn_like("arn:aws:s3:::b", "not an arn"));
    }
}
