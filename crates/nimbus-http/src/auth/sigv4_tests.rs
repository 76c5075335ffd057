//! SigV4 against botocore's own signatures (computed with `botocore.auth.SigV4Auth`) and AWS's
//! published signing-key example.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};

use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const AMZ_DATE: &str = "20261206T024400Z";
/// `AMZ_DATE` in seconds since the epoch.
const AT: u64 = 1_796_525_040;

/// Checks a Lambda request's signature.
fn verify(
    request: &SignedRequest<'_>,
    authorization: &Authorization<'_>,
    secret: &str,
    region: &str,
    now: SystemTime,
) -> Result<(), SignatureError> {
    verify_scoped(request, authorization, secret, region, LAMBDA, now)
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

/// botocore's invoke of a function by ARN, `Qualifier=$LATEST`, with a header to trim.
fn invoke_headers() -> HeaderMap {
    headers(&[
        ("content-type", "application/json"),
        ("host", "127.0.0.1:9001"),
        ("x-amz-date", AMZ_DATE),
        ("x-amz-invocation-type", "  Event   two  "),
    ])
}

fn invoke_request(headers: &HeaderMap) -> SignedRequest<'_> {
    SignedRequest {
        method: "POST",
        path: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Aecho/invocations",
        query: Some("Qualifier=%24LATEST"),
        headers,
        payload: br#"{"a": 1}"#,
    }
}

const INVOKE_SIGNED: &str = "content-type;host;x-amz-date;x-amz-invocation-type";
const INVOKE_SIGNATURE: &str = "afbc741f0f5c52904599af74c56bd23582bba82b3ee27a391d2b650fbf8b85a4";

fn invoke_authorization(signature: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261206/us-east-1/lambda/aws4_request, \
         SignedHeaders={INVOKE_SIGNED}, Signature={signature}"
    )
}

#[test]
fn the_signing_key_is_the_one_aws_documents() {
    assert_eq!(
        hex::encode(signing_key(SECRET, "20120215", "us-east-1", "iam")),
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    );
}

#[test]
fn the_canonical_request_is_botocores_with_the_path_encoded_again() {
    let headers = invoke_headers();
    let expected = "POST\n\
        /2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-east-1%253A000000000000%253Afunction%253Aecho/invocations\n\
        Qualifier=%24LATEST\n\
        content-type:application/json\n\
        host:127.0.0.1:9001\n\
        x-amz-date:20261206T024400Z\n\
        x-amz-invocation-type:Event two\n\
        \n\
        content-type;host;x-amz-date;x-amz-invocation-type\n\
        f9d86028c6e0d64e225186f96acb69338b2c59764df79162107f5c4bb34d1310";
    assert_eq!(
        canonical_request(&invoke_request(&headers), INVOKE_SIGNED),
        expected
    );
    assert_eq!(
        sign(
            &invoke_request(&headers),
            INVOKE_SIGNED,
            SECRET,
            AMZ_DATE,
            "us-east-1"
        ),
        INVOKE_SIGNATURE
    );
}

#[test]
fn the_query_is_decoded_encoded_strictly_and_sorted() {
    let headers = headers(&[("host", "127.0.0.1:9001"), ("x-amz-date", AMZ_DATE)]);
    let request = SignedRequest {
        method: "DELETE",
        path: "/2015-03-31/functions/echo/policy/s3-photos",
        query: Some("RevisionId=a+b%2Bc%2Fd&Qualifier=%24LATEST"),
        headers: &headers,
        payload: b"",
    };
    let canonical = canonical_request(&request, "host;x-amz-date");
    assert!(
        canonical.contains("\nQualifier=%24LATEST&RevisionId=a%20b%2Bc%2Fd\n"),
        "{canonical}"
    );
    assert_eq!(
        sign(&request, "host;x-amz-date", SECRET, AMZ_DATE, "us-east-1"),
        "e7b206e1c4a8e174a1337ad502ae3ae3c375f71363415bae8cbcb5fd7279a3b1"
    );
}

#[test]
fn an_authorization_header_is_read_into_its_parts() {
    let header = invoke_authorization(INVOKE_SIGNATURE);
    let parsed = parse(&header).unwrap();
    assert_eq!(
        parsed,
        Authorization {
            access_key: "AKIDEXAMPLE",
            date: "20261206",
            region: "us-east-1",
            service: "lambda",
            terminal: "aws4_request",
            signed_headers: INVOKE_SIGNED,
            signature: INVOKE_SIGNATURE,
        }
    );
    let incomplete = |header: &str| match parse(header) {
        Err(SignatureError::Incomplete(message)) => message,
        other => panic!("{header}: {other:?}"),
    };
    assert!(incomplete("Basic dXNlcjpwYXNz").contains("AWS4-HMAC-SHA256"));
    assert!(
        incomplete("AWS4-HMAC-SHA256 Credential=A/20261206/us-east-1/lambda/aws4_request")
            .contains("'SignedHeaders'")
    );
    assert!(
        incomplete("AWS4-HMAC-SHA256 Credential=A/x, SignedHeaders=host, Signature=00")
            .contains("Credential should be of the form")
    );
}

#[test]
fn the_right_secret_verifies_and_anything_else_does_not() {
    let headers = invoke_headers();
    let request = invoke_request(&headers);
    let header = invoke_authorization(INVOKE_SIGNATURE);
    let auth = parse(&header).unwrap();
    assert_eq!(verify(&request, &auth, SECRET, "us-east-1", at(AT)), Ok(()));

    assert_eq!(
        verify(&request, &auth, "another secret", "us-east-1", at(AT)),
        Err(SignatureError::Mismatch)
    );
    let tampered = SignedRequest {
        payload: br#"{"a": 2}"#,
        ..request
    };
    assert_eq!(
        verify(&tampered, &auth, SECRET, "us-east-1", at(AT)),
        Err(SignatureError::Mismatch)
    );
    let elsewhere = SignedRequest {
        path: "/2015-03-31/functions/other/invocations",
        ..request
    };
    assert_eq!(
        verify(&elsewhere, &auth, SECRET, "us-east-1", at(AT)),
        Err(SignatureError::Mismatch)
    );
    let garbled = invoke_authorization("not-hex");
    assert_eq!(
        verify(
            &request,
            &parse(&garbled).unwrap(),
            SECRET,
            "us-east-1",
            at(AT)
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_scope_for_another_region_or_service_is_refused() {
    let headers = invoke_headers();
    let request = invoke_request(&headers);
    let header = invoke_authorization(INVOKE_SIGNATURE);
    let auth = parse(&header).unwrap();
    assert!(matches!(
        verify(&request, &auth, SECRET, "eu-west-1", at(AT)),
        Err(SignatureError::Invalid(m)) if m.contains("valid region")
    ));
    let s3 = header.replace("/lambda/", "/s3/");
    assert!(matches!(
        verify(&request, &parse(&s3).unwrap(), SECRET, "us-east-1", at(AT)),
        Err(SignatureError::Invalid(m)) if m.contains("'lambda'")
    ));
    let yesterday = header.replace("/20261206/", "/20261205/");
    assert!(matches!(
        verify(&request, &parse(&yesterday).unwrap(), SECRET, "us-east-1", at(AT)),
        Err(SignatureError::Invalid(m)) if m.contains("Date in Credential scope")
    ));
}

#[test]
fn the_host_and_the_date_must_be_signed() {
    let headers = invoke_headers();
    let request = invoke_request(&headers);
    for signed in ["content-type;x-amz-date", "content-type;host"] {
        let header = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261206/us-east-1/lambda/aws4_request, \
             SignedHeaders={signed}, Signature={INVOKE_SIGNATURE}"
        );
        assert!(matches!(
            verify(&request, &parse(&header).unwrap(), SECRET, "us-east-1", at(AT)),
            Err(SignatureError::Invalid(m)) if m.contains("must be a 'SignedHeader'")
        ));
    }
}

#[test]
fn five_minutes_of_skew_are_allowed_and_no_more() {
    let headers = invoke_headers();
    let request = invoke_request(&headers);
    let header = invoke_authorization(INVOKE_SIGNATURE);
    let auth = parse(&header).unwrap();
    for now in [AT - 300, AT + 300] {
        assert_eq!(
            verify(&request, &auth, SECRET, "us-east-1", at(now)),
            Ok(())
        );
    }
    assert_eq!(
        verify(&request, &auth, SECRET, "us-east-1", at(AT + 301)),
        Err(SignatureError::Expired(
            "Signature expired: 20261206T024400Z is now earlier than 20261206T024401Z \
             (20261206T024901Z - 5 min.)"
                .into()
        ))
    );
    assert!(matches!(
        verify(&request, &auth, SECRET, "us-east-1", at(AT - 301)),
        Err(SignatureError::Expired(m)) if m.starts_with("Signature not yet current")
    ));
}

#[test]
fn a_request_without_a_date_is_incomplete() {
    let headers = headers(&[
        ("content-type", "application/json"),
        ("host", "127.0.0.1:9001"),
        ("x-amz-invocation-type", "Event two"),
    ]);
    let request = invoke_request(&headers);
    let header = invoke_authorization(INVOKE_SIGNATURE);
    assert!(matches!(
        verify(&request, &parse(&header).unwrap(), SECRET, "us-east-1", at(AT)),
        Err(SignatureError::Incomplete(m)) if m.contains("X-Amz-Date")
    ));
}
