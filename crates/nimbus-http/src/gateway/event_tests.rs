//! Tests of the proxy events: the fields of both payload versions, bodies, cookies, queries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{json, Value};

use super::*;

/// The caller of an open route.
static HOST: Caller = Caller {
    principal: Principal::Host,
    proof: Proof::Nothing,
};

fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_584_039_838_123)
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

fn incoming<'a>(
    method: &'a Method,
    headers: &'a HeaderMap,
    body: &'a [u8],
    params: &'a [(String, String)],
) -> Incoming<'a> {
    Incoming {
        method,
        raw_path: "/orders/a%20b",
        raw_query: "tag=x&tag=y&q=a%2Bb+c&empty",
        version: http::Version::HTTP_11,
        headers,
        body,
        source_ip: "10.0.0.7".to_owned(),
        request_id: "req-1",
        at: at(),
        account_id: "123456789012",
        route_key: "POST /orders/{id}",
        resource: "/orders/{id}",
        path_parameters: params,
        caller: &HOST,
    }
}

fn params() -> Vec<(String, String)> {
    vec![("id".to_owned(), "a b".to_owned())]
}

#[test]
fn request_time_is_clf() {
    assert_eq!(request_time(at()), "12/Mar/2020:19:03:58 +0000");
}

#[test]
fn v2_has_the_http_api_fields() {
    let method = Method::POST;
    let headers = headers(&[
        ("host", "api.example.com:3000"),
        ("user-agent", "curl/8"),
        ("x-multi", "1"),
        ("x-multi", "2"),
        ("cookie", "a=1; b=2"),
        ("cookie", "c=3"),
        ("content-type", "application/json"),
    ]);
    let params = params();
    let event = v2(&incoming(&method, &headers, br#"{"n":1}"#, &params)).unwrap();
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "POST /orders/{id}");
    assert_eq!(event["rawPath"], "/orders/a%20b");
    assert_eq!(event["rawQueryString"], "tag=x&tag=y&q=a%2Bb+c&empty");
    assert_eq!(event["cookies"], json!(["a=1", "b=2", "c=3"]));
    assert_eq!(event["headers"]["x-multi"], "1,2");
    assert_eq!(event["headers"]["user-agent"], "curl/8");
    assert_eq!(event["headers"]["x-forwarded-proto"], "http");
    assert_eq!(event["headers"]["x-forwarded-port"], "3000");
    assert!(event["headers"].get("cookie").is_none());
    assert_eq!(
        event["queryStringParameters"],
        json!({"tag": "x,y", "q": "a+b c", "empty": ""})
    );
    assert_eq!(event["pathParameters"], json!({"id": "a b"}));
    assert_eq!(event["body"], r#"{"n":1}"#);
    assert_eq!(event["isBase64Encoded"], false);
    let context = &event["requestContext"];
    assert_eq!(context["accountId"], "123456789012");
    assert_eq!(context["apiId"], API_ID);
    assert_eq!(context["domainName"], "api.example.com");
    assert_eq!(context["domainPrefix"], "api");
    assert_eq!(context["requestId"], "req-1");
    assert_eq!(context["routeKey"], "POST /orders/{id}");
    assert_eq!(context["stage"], "$default");
    assert_eq!(context["time"], "12/Mar/2020:19:03:58 +0000");
    assert_eq!(context["timeEpoch"], 1_584_039_838_123_i64);
    assert_eq!(
        context["http"],
        json!({"method": "POST", "path": "/orders/a%20b", "protocol": "HTTP/1.1",
               "sourceIp": "10.0.0.7", "userAgent": "curl/8"})
    );
    for absent in [
        "httpMethod",
        "resource",
        "type",
        "methodArn",
        "stageVariables",
    ] {
        assert!(event.get(absent).is_none(), "{absent}");
    }
    // It parses as Lambda's type.
    let parsed: ApiGatewayV2httpRequest = serde_json::from_value(event).unwrap();
    assert_eq!(parsed.request_context.http.method, Method::POST);
}

#[test]
fn v2_without_body_query_or_cookies_leaves_them_out() {
    let method = Method::GET;
    let headers = headers(&[]);
    let mut incoming = incoming(&method, &headers, b"", &[]);
    incoming.raw_query = "";
    let event = v2(&incoming).unwrap();
    for absent in ["body", "cookies", "queryStringParameters", "pathParameters"] {
        assert!(event.get(absent).is_none(), "{absent}");
    }
    assert_eq!(event["isBase64Encoded"], false);
    assert_eq!(event["rawQueryString"], "");
    assert_eq!(event["requestContext"]["domainName"], "localhost");
    assert_eq!(event["headers"]["x-forwarded-port"], "80");
}

#[test]
fn binary_bodies_are_base64() {
    let method = Method::POST;
    let bytes = [0_u8, 159, 146, 150, 255];
    for content_type in [Some("application/octet-stream"), Some("image/png")] {
        let mut map = HeaderMap::new();
        if let Some(ct) = content_type {
            map.insert("content-type", HeaderValue::from_static(ct));
        }
        let event = v2(&incoming(&method, &map, &bytes, &[])).unwrap();
        assert_eq!(event["isBase64Encoded"], true);
        assert_eq!(event["body"], "AJ+Slv8=");
        let event = v1(&incoming(&method, &map, &bytes, &[])).unwrap();
        assert_eq!(event["isBase64Encoded"], true);
        assert_eq!(event["body"], "AJ+Slv8=");
    }
    // Text types are passed as they are, unless they are not UTF-8.
    let map = headers(&[("content-type", "text/plain; charset=utf-8")]);
    let event = v2(&incoming(&method, &map, b"hello", &[])).unwrap();
    assert_eq!(
        (&event["body"], &event["isBase64Encoded"]),
        (&json!("hello"), &json!(false))
    );
    let event = v2(&incoming(&method, &map, &bytes, &[])).unwrap();
    assert_eq!(event["isBase64Encoded"], true);
}

#[test]
fn text_content_types() {
    for text in [
        None,
        Some("text/html"),
        Some("application/json; charset=utf-8"),
        Some("application/xml"),
        Some("application/x-www-form-urlencoded"),
        Some("application/vnd.api+json"),
        Some("application/atom+xml"),
        Some("Application/JSON"),
    ] {
        assert!(is_text(text), "{text:?}");
    }
    for binary in ["application/octet-stream", "image/png", "application/pdf"] {
        assert!(!is_text(Some(binary)), "{binary}");
    }
}

#[test]
fn v1_has_the_rest_api_fields() {
    let method = Method::POST;
    let headers = headers(&[
        ("host", "localhost:9001"),
        ("user-agent", "curl/8"),
        ("x-multi", "1"),
        ("x-multi", "2"),
        ("cookie", "a=1"),
    ]);
    let params = params();
    let event = v1(&incoming(&method, &headers, b"plain", &params)).unwrap();
    assert_eq!(event["resource"], "/orders/{id}");
    assert_eq!(event["path"], "/orders/a%20b");
    assert_eq!(event["httpMethod"], "POST");
    assert_eq!(event["headers"]["x-multi"], "2", "the last value wins");
    assert_eq!(event["headers"]["cookie"], "a=1");
    assert_eq!(event["multiValueHeaders"]["x-multi"], json!(["1", "2"]));
    assert_eq!(
        event["multiValueHeaders"]["x-forwarded-port"],
        json!(["9001"])
    );
    assert_eq!(
        event["queryStringParameters"],
        json!({"tag": "y", "q": "a+b c", "empty": ""})
    );
    assert_eq!(
        event["multiValueQueryStringParameters"],
        json!({"tag": ["x", "y"], "q": ["a+b c"], "empty": [""]})
    );
    assert_eq!(event["pathParameters"], json!({"id": "a b"}));
    assert_eq!(event["stageVariables"], Value::Null);
    assert_eq!(event["body"], "plain");
    assert_eq!(event["isBase64Encoded"], false);
    let context = &event["requestContext"];
    assert_eq!(context["accountId"], "123456789012");
    assert_eq!(context["stage"], "$default");
    assert_eq!(context["requestId"], "req-1");
    assert_eq!(context["resourcePath"], "/orders/{id}");
    assert_eq!(context["httpMethod"], "POST");
    assert_eq!(context["path"], "/orders/a%20b");
    assert_eq!(context["protocol"], "HTTP/1.1");
    assert_eq!(context["requestTime"], "12/Mar/2020:19:03:58 +0000");
    assert_eq!(context["requestTimeEpoch"], 1_584_039_838_123_i64);
    assert_eq!(context["apiId"], API_ID);
    assert_eq!(context["identity"]["sourceIp"], "10.0.0.7");
    assert_eq!(context["identity"]["userAgent"], "curl/8");
    assert_eq!(context["resourceId"].as_str().map(str::len), Some(6));
    let parsed: ApiGatewayProxyRequest = serde_json::from_value(event).unwrap();
    assert_eq!(parsed.http_method, Method::POST);
}

#[test]
fn v1_without_query_params_or_body_has_nulls() {
    let method = Method::GET;
    let headers = headers(&[]);
    let mut incoming = incoming(&method, &headers, b"", &[]);
    incoming.raw_query = "";
    let event = v1(&incoming).unwrap();
    for null in [
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "pathParameters",
        "body",
    ] {
        assert_eq!(event[null], Value::Null, "{null}");
    }
}

#[test]
fn plain_headers_read_as_the_grouped_ones() {
    let method = Method::GET;
    let mut plain = headers(&[
        ("host", "api.example.com:3000"),
        ("user-agent", "curl/8"),
        ("cookie", "a=1; b=2"),
    ]);
    plain.insert("x-custom", HeaderValue::from_str("caf\u{e9}").unwrap());
    let incoming = incoming(&method, &plain, b"", &[]);
    assert!(plain_headers(&incoming).is_some());
    assert_eq!(v2_headers(&incoming), v2_headers_grouped(&incoming));
    let expected = v1_headers_grouped(&incoming);
    let plain = plain_headers(&incoming).unwrap();
    assert_eq!((plain.clone(), plain), expected);

    let repeated = headers(&[("accept", "a"), ("accept", "b")]);
    assert!(plain_headers(&incoming_with(&method, &repeated)).is_none());
}

fn incoming_with<'a>(method: &'a Method, headers: &'a HeaderMap) -> Incoming<'a> {
    incoming(method, headers, b"", &[])
}

#[test]
fn the_cached_request_time_is_the_request_time() {
    let later = at() + Duration::from_millis(1500);
    assert_eq!(request_time_cached(at()), request_time(at()));
    assert_eq!(request_time_cached(later), request_time(later));
    assert_eq!(request_time_cached(at()), request_time(at()));
}

fn ana() -> Principal {
    Principal::Identity {
        arn: "arn:aws:iam::111122223333:user/ana".into(),
        account: "111122223333".into(),
        org_id: Some("o-ana".into()),
    }
}

#[test]
fn open_routes_carry_no_caller() {
    let method = Method::GET;
    let none = HeaderMap::new();
    let incoming = incoming(&method, &none, b"", &[]);
    let v2 = v2(&incoming).unwrap();
    assert!(v2["requestContext"].get("authorizer").is_none(), "{v2}");
    let v1 = v1(&incoming).unwrap();
    let identity = &v1["requestContext"]["identity"];
    for absent in ["apiKey", "accessKey", "userArn", "accountId"] {
        assert_eq!(identity[absent], Value::Null, "{absent}");
    }
}

#[test]
fn a_signed_request_carries_its_signer() {
    let method = Method::GET;
    let none = HeaderMap::new();
    let caller = Caller {
        principal: ana(),
        proof: Proof::Signature("AKIAANA".to_owned()),
    };
    let mut incoming = incoming(&method, &none, b"", &[]);
    incoming.caller = &caller;
    let v2 = v2(&incoming).unwrap();
    assert_eq!(
        v2["requestContext"]["authorizer"]["iam"],
        json!({"accessKey": "AKIAANA", "accountId": "111122223333", "callerId": null,
               "principalOrgId": "o-ana", "userArn": "arn:aws:iam::111122223333:user/ana",
               "userId": null})
    );
    let parsed: ApiGatewayV2httpRequest = serde_json::from_value(v2).unwrap();
    let iam = parsed.request_context.authorizer.unwrap().iam.unwrap();
    assert_eq!(iam.access_key.as_deref(), Some("AKIAANA"));

    let v1 = v1(&incoming).unwrap();
    let identity = &v1["requestContext"]["identity"];
    assert_eq!(identity["accessKey"], "AKIAANA");
    assert_eq!(identity["accountId"], "111122223333");
    assert_eq!(identity["userArn"], "arn:aws:iam::111122223333:user/ana");
    assert_eq!(identity["apiKey"], Value::Null);
}

#[test]
fn an_api_key_request_carries_its_key_in_payload_one() {
    let method = Method::GET;
    let none = HeaderMap::new();
    let caller = Caller {
        principal: ana(),
        proof: Proof::ApiKey("partner-key-0123456789".to_owned()),
    };
    let mut incoming = incoming(&method, &none, b"", &[]);
    incoming.caller = &caller;
    let v1 = v1(&incoming).unwrap();
    let identity = &v1["requestContext"]["identity"];
    assert_eq!(identity["apiKey"], "partner-key-0123456789");
    assert_eq!(identity["userArn"], Value::Null);
    let parsed: ApiGatewayProxyRequest = serde_json::from_value(v1).unwrap();
    assert_eq!(
        parsed.request_context.identity.api_key.as_deref(),
        Some("partner-key-0123456789")
    );
    // HTTP APIs have no API keys: 2.0 says nothing of it.
    let v2 = v2(&incoming).unwrap();
    assert!(v2["requestContext"].get("authorizer").is_none(), "{v2}");
}
