//! Filter patterns: a table of pattern / record cases, including type mismatches, and invalid
//! patterns rejected as config errors.

use nimbus_sources::Attributes;

use nimbus_sources::{FilterPattern, Filters};
use serde_json::json;

#[test]
fn pattern_table() {
    // (pattern, body, expected)
    let cases: &[(&str, serde_json::Value, bool)] = &[
        // equals, OR arrays
        (
            r#"{"body": {"type": ["order"]}}"#,
            json!({"type": "order"}),
            true,
        ),
        (
            r#"{"body": {"type": ["order", "refund"]}}"#,
            json!({"type": "refund"}),
            true,
        ),
        (
            r#"{"body": {"type": ["order"]}}"#,
            json!({"type": "Order"}),
            false,
        ),
        // type mismatches: a number pattern does not match a string and vice versa
        (r#"{"body": {"n": [5]}}"#, json!({"n": 5}), true),
        (r#"{"body": {"n": [5]}}"#, json!({"n": "5"}), false),
        (r#"{"body": {"n": ["5"]}}"#, json!({"n": 5}), false),
        (r#"{"body": {"n": [5]}}"#, json!({"n": 5.0}), true),
        (r#"{"body": {"ok": [true]}}"#, json!({"ok": "true"}), false),
        (r#"{"body": {"v": [null]}}"#, json!({"v": null}), true),
        (r#"{"body": {"v": [""]}}"#, json!({"v": ""}), true),
        // prefix / suffix only match strings
        (
            r#"{"body": {"sku": [{"prefix": "BK-"}]}}"#,
            json!({"sku": "BK-12"}),
            true,
        ),
        (
            r#"{"body": {"sku": [{"prefix": "BK-"}]}}"#,
            json!({"sku": "XK-12"}),
            false,
        ),
        (
            r#"{"body": {"sku": [{"prefix": "1"}]}}"#,
            json!({"sku": 12}),
            false,
        ),
        (
            r#"{"body": {"f": [{"suffix": ".png"}]}}"#,
            json!({"f": "a/b.png"}),
            true,
        ),
        (
            r#"{"body": {"f": [{"suffix": ".png"}]}}"#,
            json!({"f": "a/b.jpg"}),
            false,
        ),
        // numeric ranges only match numbers
        (
            r#"{"body": {"a": [{"numeric": [">", 100]}]}}"#,
            json!({"a": 101}),
            true,
        ),
        (
            r#"{"body": {"a": [{"numeric": [">", 100]}]}}"#,
            json!({"a": 100}),
            false,
        ),
        (
            r#"{"body": {"a": [{"numeric": [">=", 10, "<", 20]}]}}"#,
            json!({"a": 10}),
            true,
        ),
        (
            r#"{"body": {"a": [{"numeric": [">=", 10, "<", 20]}]}}"#,
            json!({"a": 20}),
            false,
        ),
        (
            r#"{"body": {"a": [{"numeric": ["=", 3.5]}]}}"#,
            json!({"a": 3.5}),
            true,
        ),
        (
            r#"{"body": {"a": [{"numeric": [">", 1]}]}}"#,
            json!({"a": "2"}),
            false,
        ),
        // exists
        (
            r#"{"body": {"c": [{"exists": true}]}}"#,
            json!({"c": 0}),
            true,
        ),
        (
            r#"{"body": {"c": [{"exists": true}]}}"#,
            json!({"d": 0}),
            false,
        ),
        (
            r#"{"body": {"c": [{"exists": false}]}}"#,
            json!({"d": 0}),
            true,
        ),
        (
            r#"{"body": {"c": [{"exists": false}]}}"#,
            json!({"c": null}),
            false,
        ),
        // anything-but
        (
            r#"{"body": {"r": [{"anything-but": ["test", "dev"]}]}}"#,
            json!({"r": "prod"}),
            true,
        ),
        (
            r#"{"body": {"r": [{"anything-but": ["test", "dev"]}]}}"#,
            json!({"r": "dev"}),
            false,
        ),
        (
            r#"{"body": {"r": [{"anything-but": "test"}]}}"#,
            json!({"r": "prod"}),
            true,
        ),
        (
            r#"{"body": {"r": [{"anything-but": {"prefix": "te"}}]}}"#,
            json!({"r": "test"}),
            false,
        ),
        (
            r#"{"body": {"r": [{"anything-but": ["x"]}]}}"#,
            json!({}),
            false,
        ),
        // nested objects are AND-ed, arrays in the event match if any element does
        (
            r#"{"body": {"o": {"k": ["v"]}, "t": ["x"]}}"#,
            json!({"o": {"k": "v"}, "t": "x"}),
            true,
        ),
        (
            r#"{"body": {"o": {"k": ["v"]}, "t": ["x"]}}"#,
            json!({"o": {"k": "v"}, "t": "y"}),
            false,
        ),
        (
            r#"{"body": {"tags": ["red"]}}"#,
            json!({"tags": ["blue", "red"]}),
            true,
        ),
        (
            r#"{"body": {"tags": ["red"]}}"#,
            json!({"tags": ["blue"]}),
            false,
        ),
    ];
    for (pattern, body, expected) in cases {
        let parsed = FilterPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        assert_eq!(
            parsed.matches_json(Some(body), None),
            *expected,
            "pattern {pattern} on {body}"
        );
    }
}

#[test]
fn text_bodies_are_strings_to_conditions_and_match_no_object_pattern() {
    // (pattern, body, reaches the function)
    let cases: &[(&str, &str, bool)] = &[
        (r#"{"body": ["ERROR disk full"]}"#, "ERROR disk full", true),
        (r#"{"body": ["ERROR"]}"#, "ERROR disk full", false),
        (
            r#"{"body": [{"prefix": "ERROR"}]}"#,
            "ERROR disk full",
            true,
        ),
        (
            r#"{"body": [{"prefix": "ERROR"}]}"#,
            "error disk full",
            false,
        ),
        (r#"{"body": [{"suffix": "full"}]}"#, "ERROR disk full", true),
        (
            r#"{"body": [{"suffix": "full"}]}"#,
            "ERROR disk empty",
            false,
        ),
        (r#"{"body": [{"anything-but": ["ping"]}]}"#, "pong", true),
        (r#"{"body": [{"anything-but": ["ping"]}]}"#, "ping", false),
        (
            r#"{"body": [{"anything-but": {"prefix": "DEBUG"}}]}"#,
            "INFO x",
            true,
        ),
        (
            r#"{"body": [{"anything-but": {"prefix": "DEBUG"}}]}"#,
            "DEBUG x",
            false,
        ),
        (r#"{"body": [{"exists": true}]}"#, "anything", true),
        (r#"{"body": [{"exists": false}]}"#, "anything", false),
        (
            r#"{"body": [{"equals-ignore-case": "error"}]}"#,
            "ERROR",
            true,
        ),
        (
            r#"{"body": [{"equals-ignore-case": "error"}]}"#,
            "ERRORS",
            false,
        ),
        (
            r#"{"body": [{"wildcard": "ERROR*full"}]}"#,
            "ERROR disk full",
            true,
        ),
        (
            r#"{"body": [{"wildcard": "ERROR*full"}]}"#,
            "ERROR disk empty",
            false,
        ),
        (
            r#"{"body": [{"wildcard": "*disk*"}]}"#,
            "ERROR disk full",
            true,
        ),
        (r#"{"body": [{"wildcard": "a\\*b"}]}"#, "a*b", true),
        (r#"{"body": [{"wildcard": "a\\*b"}]}"#, "axb", false),
        // a number condition needs a number: a text body is a string
        (r#"{"body": [{"numeric": [">", 1]}]}"#, "5 apples", false),
        // a JSON pattern never matches a text body (Lambda drops the message)
        (
            r#"{"body": {"level": ["ERROR"]}}"#,
            "ERROR disk full",
            false,
        ),
        (
            r#"{"body": {"level": [{"exists": false}]}}"#,
            "ERROR disk full",
            false,
        ),
        // a body that is JSON is matched as JSON: a number, an object
        (r#"{"body": [{"numeric": [">", 1]}]}"#, "5", true),
        (r#"{"body": [{"prefix": "{"}]}"#, r#"{"a": 1}"#, false),
        (r#"{"body": ["quoted"]}"#, r#""quoted""#, true),
    ];
    for (pattern, body, expected) in cases {
        let parsed = FilterPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        assert_eq!(
            parsed.matches(body.as_bytes(), None),
            *expected,
            "pattern {pattern} on {body}"
        );
        let filters = Filters::parse(&[pattern]).unwrap();
        assert_eq!(
            filters.matches(body.as_bytes(), &Attributes::new()),
            *expected
        );
    }
}

#[test]
fn equals_ignore_case_and_wildcard_on_json_fields() {
    let cases: &[(&str, serde_json::Value, bool)] = &[
        (
            r#"{"body": {"n": [{"equals-ignore-case": "alice"}]}}"#,
            json!({"n": "ALICE"}),
            true,
        ),
        (
            r#"{"body": {"n": [{"equals-ignore-case": "alice"}]}}"#,
            json!({"n": "bob"}),
            false,
        ),
        (
            r#"{"body": {"p": [{"wildcard": "logs/*/*.txt"}]}}"#,
            json!({"p": "logs/2024/a.txt"}),
            true,
        ),
        (
            r#"{"body": {"p": [{"wildcard": "logs/*/*.txt"}]}}"#,
            json!({"p": "logs/a.txt"}),
            false,
        ),
        (
            r#"{"body": {"p": [{"wildcard": "a*a"}]}}"#,
            json!({"p": "a"}),
            false,
        ),
        (
            r#"{"body": {"p": [{"wildcard": "x*"}]}}"#,
            json!({"p": 1}),
            false,
        ),
    ];
    for (pattern, body, expected) in cases {
        let parsed = FilterPattern::parse(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        assert_eq!(
            parsed.matches_json(Some(body), None),
            *expected,
            "{pattern} on {body}"
        );
    }
}

#[test]
fn bodies_that_are_not_json_match_no_object_pattern() {
    let filters = Filters::parse(&[r#"{"body": {"a": [{"exists": false}]}}"#]).unwrap();
    assert!(!filters.matches(b"plain text", &Attributes::new()));
    assert!(filters.matches(br#"{"b": 1}"#, &Attributes::new()));
}

#[test]
fn attributes_and_or_of_patterns() {
    let filters = Filters::parse(&[
        r#"{"attributes": {"source": ["web"]}}"#,
        r#"{"body": {"priority": ["high"]}}"#,
    ])
    .unwrap();
    let web = Attributes::new().with("source", "web");
    assert!(filters.matches(b"{}", &web));
    assert!(filters.matches(br#"{"priority": "high"}"#, &Attributes::new()));
    assert!(!filters.matches(br#"{"priority": "low"}"#, &Attributes::new()));
    assert!(Filters::parse::<&str>(&[])
        .unwrap()
        .matches(b"anything", &Attributes::new()));
}

#[test]
fn invalid_patterns_are_config_errors() {
    let bad = [
        "not json",
        r#"["body"]"#,
        r#"{"headers": {"a": ["b"]}}"#,
        r#"{"body": {"a": "b"}}"#,
        r#"{"body": {"a": []}}"#,
        r#"{"body": {"a": [{"numeric": [">"]}]}}"#,
        r#"{"body": {"a": [{"numeric": ["~", 1]}]}}"#,
        r#"{"body": {"a": [{"prefix": 1}]}}"#,
        r#"{"body": {"a": [{"wildcard": "*"}]}}"#,
        r#"{"body": {"a": [{"wildcard": "a**b"}]}}"#,
        r#"{"body": {"a": [{"wildcard": "a\\b"}]}}"#,
        r#"{"body": {"a": [{"equals-ignore-case": 1}]}}"#,
        r#"{"data": ["x"]}"#,
        "{}",
        r#"{"body": {"a": [{"prefix": "x", "suffix": "y"}]}}"#,
    ];
    for pattern in bad {
        let err = FilterPattern::parse(pattern).expect_err(pattern);
        assert_eq!(err.field, "filter", "{pattern}");
    }
    let too_many = vec![r#"{"body": {"a": ["b"]}}"#; 11];
    assert_eq!(Filters::parse(&too_many).unwrap_err().field, "filters");
    let long = format!(r#"{{"body": {{"a": ["{}"]}}}}"#, "x".repeat(5_000));
    assert!(FilterPattern::parse(&long).is_err());
}
