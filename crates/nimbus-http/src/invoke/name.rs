//! The `{FunctionName}` of the Invoke API: a name, `name:qualifier`, a partial or a full ARN.

/// A function name as a request gives it, resolved to the bare name and its qualifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FunctionRef {
    pub(crate) name: String,
    pub(crate) qualifier: Option<String>,
}

/// Why a `{FunctionName}` was refused (Lambda: `ValidationException`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidName(pub(crate) String);

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

pub(crate) fn is_qualifier(q: &str) -> bool {
    (1..=128).contains(&q.len())
        && (q == "$LATEST"
            || q == "$LATEST.PUBLISHED"
            || q.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

/// Parses the (already percent-decoded) path segment, Lambda's `NamespacedFunctionName`:
/// `name[:q]`, `123456789012:function:name[:q]` or
/// `arn:aws:lambda:us-east-1:123456789012:function:name[:q]`.
pub(crate) fn parse(raw: &str) -> Result<FunctionRef, InvalidName> {
    let invalid = || {
        InvalidName(format!(
            "1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: \
             (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{{2}}(-gov)?-[a-z]+-\\d{{1}}:)?(\\d{{12}}:)?\
             (function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
        ))
    };
    if raw.is_empty() || raw.len() > 256 {
        return Err(invalid());
    }
    let parts: Vec<&str> = raw.split(':').collect();
    // Strip the prefixes in order: `arn:<partition>:lambda:<region>:`, `<account>:`, `function:`.
    let mut rest: &[&str] = &parts;
    if rest.first() == Some(&"arn") {
        let ok = rest.len() >= 5
            && rest[1].starts_with("aws")
            && rest[2] == "lambda"
            && is_region(rest[3]);
        if !ok {
            return Err(invalid());
        }
        rest = &rest[4..];
    }
    if rest.len() >= 3 && is_account(rest[0]) && rest[1] == "function" {
        rest = &rest[2..];
    } else if rest.len() >= 2 && rest[0] == "function" {
        rest = &rest[1..];
    } else if parts[0] == "arn" {
        return Err(invalid());
    }
    let (name, qualifier) = match rest {
        [name] => (*name, None),
        [name, qualifier] => (*name, Some(*qualifier)),
        _ => return Err(invalid()),
    };
    let name_ok = !name.is_empty() && name.len() <= 64 && name.chars().all(is_name_char);
    if !name_ok || qualifier.is_some_and(|q| !is_qualifier(q)) {
        return Err(invalid());
    }
    Ok(FunctionRef {
        name: name.to_owned(),
        qualifier: qualifier.map(str::to_owned),
    })
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_region(s: &str) -> bool {
    let mut parts = s.split('-');
    let (Some(area), Some(_), Some(last)) = (parts.next(), parts.next(), parts.next_back()) else {
        return false;
    };
    area.len() == 2 && last.len() == 1 && last.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> (String, Option<String>) {
        let r = parse(raw).unwrap_or_else(|e| panic!("{raw}: {}", e.0));
        (r.name, r.qualifier)
    }

    #[test]
    fn every_form_the_sdks_send_resolves_to_the_name_and_qualifier() {
        assert_eq!(ok("echo"), ("echo".into(), None));
        assert_eq!(ok("echo:prod"), ("echo".into(), Some("prod".into())));
        assert_eq!(ok("echo:$LATEST"), ("echo".into(), Some("$LATEST".into())));
        assert_eq!(ok("123456789012:function:echo"), ("echo".into(), None));
        assert_eq!(
            ok("123456789012:function:echo:7"),
            ("echo".into(), Some("7".into()))
        );
        assert_eq!(
            ok("arn:aws:lambda:us-east-1:123456789012:function:echo"),
            ("echo".into(), None)
        );
        assert_eq!(
            ok("arn:aws:lambda:eu-west-2:123456789012:function:my_fn.v2:live"),
            ("my_fn.v2".into(), Some("live".into()))
        );
    }

    #[test]
    fn malformed_names_are_refused_with_lambdas_validation_message() {
        for raw in [
            "",
            "bad name!",
            "a:b:c",
            "arn:aws:s3:us-east-1:123456789012:function:echo",
            "arn:aws:lambda:nowhere:123456789012:function:echo",
            &"x".repeat(65),
            "echo:bad qualifier",
        ] {
            let err = parse(raw).expect_err(raw);
            assert!(
                err.0.starts_with("1 validation error detected"),
                "{}",
                err.0
            );
        }
    }
}
