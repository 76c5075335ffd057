//! Who calls the Lambda API, when the host gave the server [`Credentials`]: each request's
//! SigV4 signature (`sigv4.rs`) is checked with its access key's secret, and the request then
//! acts as that key's identity; a request without an `Authorization` header acts as
//! [`Principal::Anonymous`]. Function policies decide what each may invoke.
//!
//! | request | answer |
//! |---|---|
//! | no `Authorization` header | goes on as `Principal::Anonymous` |
//! | malformed `Authorization` header, no `X-Amz-Date` | 400 `IncompleteSignatureException` |
//! | unknown access key (neither the server's nor the runtime's) | 403 `UnrecognizedClientException` |
//! | wrong signature, credential scope or signed headers | 403 `InvalidSignatureException` |
//! | `X-Amz-Date` more than 5 minutes from the server's clock | 403 `InvalidSignatureException` (`Signature expired: ...`) |
//!
//! Keys are looked up among the server's [`Credentials`], then among the runtime's own
//! ([`Runtime::credentials_of`](nimbus_core::Runtime::credentials_of)): the credentials it
//! issues each function act as that function, so a process instance calling another function
//! through an AWS SDK is checked by its role.
//!
//! Without credentials (the default) nothing is checked and every request acts as the host.

mod amz_date;
mod credentials;
mod sigv4;

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
pub use credentials::Credentials;
use nimbus_core::Principal;

use crate::invoke::{read_body, request_id_header, AwsError};
use crate::request_id::fresh_request_id;

/// What the authenticating layer needs: the keys, the region credentials must be scoped to,
/// and the largest body it reads to hash.
#[derive(Debug)]
pub(crate) struct Authenticator {
    pub(crate) credentials: Credentials,
    /// The runtime, whose own keys (the credentials it issued its functions, and keys the
    /// host added to it) are looked up after the server's.
    pub(crate) runtime: nimbus_core::Runtime,
    pub(crate) region: String,
    pub(crate) body_limit: u64,
}

/// The layer of the Lambda API's routes: the request goes on with its [`Principal`] as an
/// extension, or is answered with the AWS error of its signature.
pub(crate) async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    request: Request,
    next: Next,
) -> Response {
    match identify(&auth, request).await {
        Ok(request) => next.run(request).await,
        Err(error) => {
            let mut response = error.into_response();
            let (name, value) = request_id_header(&fresh_request_id());
            response.headers_mut().insert(name, value);
            response
        }
    }
}

/// The request with its principal, its body read and kept for the handler.
async fn identify(auth: &Authenticator, request: Request) -> Result<Request, AwsError> {
    let (mut parts, body) = request.into_parts();
    let Some(header) = parts.headers.get(http::header::AUTHORIZATION) else {
        parts.extensions.insert(Principal::Anonymous);
        return Ok(Request::from_parts(parts, body));
    };
    let header = header
        .to_str()
        .map_err(|_| AwsError::incomplete_signature("The Authorization header is not text."))?;
    let authorization = sigv4::parse(header).map_err(signature_error)?;
    // The server's keys first, then the runtime's: a function's own credentials (handed to
    // its process instances) act as the function, checked by its role.
    let (secret, principal) = match auth.credentials.get(authorization.access_key) {
        Some(key) => (key.secret().to_owned(), key.principal().clone()),
        None => auth
            .runtime
            .credentials_of(authorization.access_key)
            .ok_or_else(AwsError::unrecognized_client)?,
    };
    // The body is part of what is signed: read it here, within the largest payload limit,
    // and hand it on to the handler.
    let payload = read_body(&parts.headers, body, auth.body_limit).await?;
    let signed = sigv4::SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        payload: &payload,
    };
    sigv4::verify(
        &signed,
        &authorization,
        &secret,
        &auth.region,
        SystemTime::now(),
    )
    .map_err(signature_error)?;
    parts.extensions.insert(principal);
    Ok(Request::from_parts(parts, Body::from(payload)))
}

fn signature_error(error: sigv4::SignatureError) -> AwsError {
    match error {
        sigv4::SignatureError::Incomplete(message) => AwsError::incomplete_signature(message),
        sigv4::SignatureError::Invalid(message) | sigv4::SignatureError::Expired(message) => {
            AwsError::invalid_signature(message)
        }
        sigv4::SignatureError::Mismatch => AwsError::invalid_signature(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        ),
    }
}
