//! Tests of reading function answers as HTTP responses, both payload versions.

use serde_json::json;

use super::*;

fn header<'a>(reply: &'a Reply, name: &str) -> Vec<&'a str> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.to_str().unwrap())
        .collect()
}

#[test]
fn v2_structured_response() {
    let reply = v2(json!({
        "statusCode": 201,
        "headers": {"X-Id": "7", "x-count": 3, "x-flag": true},
        "multiValueHeaders": {"x-multi": ["a", "b"]},
        "cookies": ["s=1; HttpOnly", "t=2"],
        "body": "created",
    }))
    .unwrap();
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(header(&reply, "x-id"), ["7"]);
    assert_eq!(header(&reply, "x-count"), ["3"]);
    assert_eq!(header(&reply, "x-flag"), ["true"]);
    assert!(
        header(&reply, "x-multi").is_empty(),
        "payload 2.0 has no multiValueHeaders"
    );
    assert_eq!(header(&reply, "set-cookie"), ["s=1; HttpOnly", "t=2"]);
    assert_eq!(header(&reply, "content-type"), ["application/json"]);
    assert_eq!(reply.body, "created");
}

#[test]
fn v2_keeps_a_given_content_type_and_drops_connection_headers() {
    let reply = v2(json!({
        "statusCode": 200,
        "headers": {"Content-Type": "text/html", "Content-Length": "999", "Connection": "close"},
    }))
    .unwrap();
    assert_eq!(header(&reply, "content-type"), ["text/html"]);
    assert!(header(&reply, "content-length").is_empty());
    assert!(header(&reply, "connection").is_empty());
    assert_eq!(reply.body, "", "no body is an empty body");
}

#[test]
fn v2_base64_bodies_are_decoded() {
    let reply =
        v2(json!({"statusCode": 200, "body": "AJ+Slv8=", "isBase64Encoded": true})).unwrap();
    assert_eq!(reply.body.as_ref(), [0_u8, 159, 146, 150, 255]);
    let bad = v2(json!({"statusCode": 200, "body": "not base64!", "isBase64Encoded": true}));
    assert!(bad.is_err());
    // Wrapped at 76 characters, as Python's base64.encodebytes writes it.
    let wrapped =
        v2(json!({"statusCode": 200, "body": "AJ+S\nlv8=\n", "isBase64Encoded": true})).unwrap();
    assert_eq!(wrapped.body.as_ref(), [0_u8, 159, 146, 150, 255]);
}

#[test]
fn informational_status_codes_are_not_answers() {
    for code in [100, 101, 103, 199, 600] {
        assert!(v2(json!({"statusCode": code})).is_err(), "{code}");
        assert!(
            v1(json!({"statusCode": code, "body": ""})).is_err(),
            "{code}"
        );
    }
}

#[test]
fn v2_output_without_status_code_is_a_json_200() {
    for (output, body) in [
        (json!({"a": 1}), r#"{"a":1}"#),
        (json!("plain text"), "plain text"),
        (json!(42), "42"),
        (json!([1, 2]), "[1,2]"),
        (json!(null), "null"),
        (json!({"statuscode": 500}), r#"{"statuscode":500}"#),
    ] {
        let reply = v2(output).unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(header(&reply, "content-type"), ["application/json"]);
        assert_eq!(reply.body, body);
    }
}

#[test]
fn v2_invalid_structured_responses_are_malformed() {
    for output in [
        json!({"statusCode": 99}),
        json!({"statusCode": 600}),
        json!({"statusCode": -1}),
        json!({"statusCode": "200"}),
        json!({"statusCode": 200.5}),
        json!({"statusCode": 200, "body": 5}),
        json!({"statusCode": 200, "headers": "x"}),
        json!({"statusCode": 200, "headers": {"x": {"nested": 1}}}),
        json!({"statusCode": 200, "headers": {"bad name": "v"}}),
        json!({"statusCode": 200, "headers": {"x": "line\nbreak"}}),
        json!({"statusCode": 200, "cookies": "a=1"}),
        json!({"statusCode": 200, "isBase64Encoded": "yes"}),
    ] {
        assert!(v2(output.clone()).is_err(), "{output}");
    }
}

#[test]
fn v1_strict_response() {
    let reply = v1(json!({
        "statusCode": 404,
        "headers": {"x-a": "1", "x-b": "2"},
        "multiValueHeaders": {"x-a": ["1", "3"], "set-cookie": ["a=1", "b=2"]},
        "body": null,
        "isBase64Encoded": false,
    }))
    .unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        header(&reply, "x-a"),
        ["1", "3"],
        "a pair in both maps appears once"
    );
    assert_eq!(header(&reply, "x-b"), ["2"]);
    assert_eq!(header(&reply, "set-cookie"), ["a=1", "b=2"]);
    assert_eq!(header(&reply, "content-type"), ["application/json"]);
    assert_eq!(reply.body, "");
    let reply = v1(json!({"statusCode": 200, "body": "aGk=", "isBase64Encoded": true})).unwrap();
    assert_eq!(reply.body, "hi");
}

#[test]
fn v1_anything_else_is_malformed() {
    for output in [
        json!("text"),
        json!(42),
        json!({"body": "no status"}),
        json!({"statusCode": "200"}),
        json!({"statusCode": 200, "extra": 1}),
        json!({"statusCode": 200, "cookies": ["a=1"]}),
        json!({"statusCode": 200, "body": {"json": true}}),
        json!({"statusCode": 200, "multiValueHeaders": {"x": "not an array"}}),
    ] {
        let error = v1(output.clone()).unwrap_err();
        assert!(error.to_string().starts_with("malformed"), "{output}");
    }
}
