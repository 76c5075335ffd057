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
fn bodies_that_are_not_json_match_no_body_pattern() {
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
