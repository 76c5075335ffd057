//! Tests of route authorization: API keys and SigV4 signatures for `execute-api`, refused as
//! API Gateway refuses them.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::*;
use crate::auth::{amz_date_of, sign_scoped};

const KEY: &str = "partner-key-0123456789-abcdef";
const SECRET: &str = "ana's secret";

fn ana() -> Principal {
    Principal::Identity {
        arn: "arn:aws:iam::111122223333:user/ana".into(),
        account: "111122223333".into(),
        org_id: None,
    }
}

fn keys() -> GatewayKeys {
    GatewayKeys {
        api_keys: ApiKeys::new().with_key(KEY, ana()),
        credentials: Credentials::new().with_key("AKIAANA", SECRET, ana()),
        region: "us-east-1".to_owned(),
    }
}

fn parts(headers: &[(&str, &str)]) -> Parts {
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/orders/a%20b?x=1");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap().into_parts().0
}

/// A request to `/orders/a%20b?x=1` with `body`, signed by `access_key` with `secret` for
/// `service`, now.
fn signed(access_key: &str, secret: &str, service: &str, body: &[u8]) -> Parts {
    let amz_date = amz_date_of(SystemTime::now());
    let mut parts = parts(&[("host", "127.0.0.1:9001"), ("x-amz-date", &amz_date)]);
    let request = crate::auth::SignedRequest {
        method: "POST",
        path: "/orders/a%20b",
        query: Some("x=1"),
        headers: &parts.headers,
        payload: body,
    };
    let signature = sign_scoped(
        &request,
        "host;x-amz-date",
        secret,
        &amz_date,
        "us-east-1",
        service,
    );
    let header = format!(
        "AWS4-HMAC-SHA256 Credential={access_key}/{}/us-east-1/{service}/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature={signature}",
        &amz_date[..8]
    );
    parts
        .headers
        .insert(http::header::AUTHORIZATION, header.parse().unwrap());
    parts
}

/// The status, `x-amzn-ErrorType` and JSON body of a refusal's answer.
async fn refusal(refusal: Refusal) -> (u16, String, Value) {
    let response = refusal.answer("r");
    let status = response.status().as_u16();
    let error_type = response
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, error_type, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn open_routes_invoke_as_the_host() {
    let runtime = Runtime::default();
    let caller = authenticate(RouteAuth::None, &keys(), &runtime, &parts(&[]), b"").unwrap();
    assert_eq!(caller, Caller::host());
}

#[tokio::test]
async fn an_api_key_route_takes_only_known_keys() {
    let runtime = Runtime::default();
    let keys = keys();
    let with_key = parts(&[("x-api-key", KEY)]);
    let caller = authenticate(RouteAuth::ApiKey, &keys, &runtime, &with_key, b"").unwrap();
    assert_eq!(caller.principal, ana());
    assert_eq!(caller.proof, Proof::ApiKey(KEY.to_owned()));
    assert!(!format!("{caller:?}").contains(KEY), "{caller:?}");

    let wrong = format!("{KEY}x");
    for headers in [
        vec![],
        vec![("x-api-key", wrong.as_str())],
        vec![("x-api-key", "")],
    ] {
        let request = parts(&headers);
        let refused = authenticate(RouteAuth::ApiKey, &keys, &runtime, &request, b"").unwrap_err();
        assert_eq!(
            refusal(refused).await,
            (
                403,
                "ForbiddenException".to_owned(),
                json!({"message": "Forbidden"})
            ),
            "{headers:?}"
        );
    }
}

#[tokio::test]
async fn an_iam_route_takes_requests_signed_for_execute_api() {
    let runtime = Runtime::default();
    let keys = keys();
    let request = signed("AKIAANA", SECRET, "execute-api", b"{}");
    let caller = authenticate(RouteAuth::AwsIam, &keys, &runtime, &request, b"{}").unwrap();
    assert_eq!(caller.principal, ana());
    assert_eq!(caller.proof, Proof::Signature("AKIAANA".to_owned()));

    // The runtime's own keys sign too: those it issued a function act as the function.
    runtime
        .register(nimbus_core::Function::new(
            "caller",
            nimbus_core::handler_fn(|v: u32, _ctx: nimbus_core::Context| async move {
                Ok::<_, nimbus_core::FunctionError>(v)
            }),
        ))
        .await
        .unwrap();
    let issued = runtime.function_credentials("caller").unwrap();
    let request = signed(
        &issued.access_key_id,
        &issued.secret_access_key,
        "execute-api",
        b"",
    );
    let caller = authenticate(RouteAuth::AwsIam, &keys, &runtime, &request, b"").unwrap();
    assert_eq!(caller.principal, Principal::Function("caller".into()));
}

#[tokio::test]
async fn an_iam_route_refuses_as_api_gateway_does() {
    let runtime = Runtime::default();
    let keys = keys();
    let cases = [
        (
            parts(&[]),
            b"".as_slice(),
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".to_owned(),
        ),
        (
            signed("AKIAANA", SECRET, "execute-api", b"{}"),
            b"{\"tampered\":1}".as_slice(),
            "InvalidSignatureException",
            crate::auth::SIGNATURE_MISMATCH.to_owned(),
        ),
        (
            signed("AKIAANA", "a guess", "execute-api", b""),
            b"".as_slice(),
            "InvalidSignatureException",
            crate::auth::SIGNATURE_MISMATCH.to_owned(),
        ),
        (
            signed("AKIAANA", SECRET, "lambda", b""),
            b"".as_slice(),
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'execute-api'.".to_owned(),
        ),
        (
            signed("AKIAUNKNOWN", SECRET, "execute-api", b""),
            b"".as_slice(),
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".to_owned(),
        ),
        (
            parts(&[("authorization", "AWS4-HMAC-SHA256 Credential=AKIAANA")]),
            b"".as_slice(),
            "IncompleteSignatureException",
            "Authorization header requires 'SignedHeaders' parameter. Authorization header \
             requires 'Signature' parameter."
                .to_owned(),
        ),
    ];
    for (request, body, error_type, message) in cases {
        let refused = authenticate(RouteAuth::AwsIam, &keys, &runtime, &request, body).unwrap_err();
        assert_eq!(
            refusal(refused).await,
            (403, error_type.to_owned(), json!({ "message": message })),
        );
    }
}
