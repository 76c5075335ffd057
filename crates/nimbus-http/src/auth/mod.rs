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
//! Without credentials (the default) the server is open: an unsigned request, or one signed
//! with a key neither the server nor the runtime knows (the SDKs insist on signing, often with
//! dummy keys), acts as the host. A request signed with a key the runtime issued a function is
//! still verified and acts as that function, so a process instance calling through an AWS SDK
//! is checked by its role; code that does not sign at all is not (set credentials to close
//! that: unsigned requests are then anonymous).
//!
//! Gateway routes with IAM authorization ([`RouteAuth::AwsIam`](crate::RouteAuth::AwsIam))
//! check signatures the same way, scoped to `execute-api`, with the same keys.

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
pub(crate) use sigv4::{SignatureError, EXECUTE_API};
#[cfg(test)]
pub(crate) use {
    amz_date::format as amz_date_of,
    sigv4::{sign_scoped, SignedRequest},
};

use crate::invoke::{read_body, request_id_header, AwsError};
use crate::request_id::fresh_request_id;

/// What the authenticating layer needs: the keys, the region credentials must be scoped to,
/// and the largest body it reads to hash.
#[derive(Debug)]
pub(crate) struct Authenticator {
    /// The host configured no credentials: unsigned requests, and requests signed with a key
    /// nobody knows (the SDKs insist on signing, often with dummy keys), act as the host; a
    /// request signed with a key the runtime issued still acts as its function.
    pub(crate) open: bool,
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
    let unsigned = if auth.open {
        Principal::Host
    } else {
        Principal::Anonymous
    };
    let Some(header) = parts.headers.get(http::header::AUTHORIZATION) else {
        parts.extensions.insert(unsigned);
        return Ok(Request::from_parts(parts, body));
    };
    let signed = match header.to_str() {
        Ok(header) => signed_by(header, &auth.credentials, &auth.runtime),
        Err(_) => Err(Refused::Signature(SignatureError::Incomplete(
            "The Authorization header is not text.".to_owned(),
        ))),
    };
    let signed = match signed {
        Ok(signed) => signed,
        // Open: a key nobody knows, or a header nobody reads, is the host's client.
        Err(_) if auth.open => {
            parts.extensions.insert(Principal::Host);
            return Ok(Request::from_parts(parts, body));
        }
        Err(Refused::UnknownKey) => return Err(AwsError::unrecognized_client()),
        Err(Refused::Signature(error)) => return Err(signature_error(error)),
    };
    // The body is part of what is signed: read it here, within the largest payload limit,
    // and hand it on to the handler.
    let payload = read_body(&parts.headers, body, auth.body_limit).await?;
    signed
        .verify(
            &parts,
            &payload,
            &auth.region,
            sigv4::LAMBDA,
            SystemTime::now(),
        )
        .map_err(signature_error)?;
    parts.extensions.insert(signed.principal);
    Ok(Request::from_parts(parts, Body::from(payload)))
}

/// What AWS answers a signature that is not the one the secret gives.
pub(crate) const SIGNATURE_MISMATCH: &str =
    "The request signature we calculated does not match the signature you provided. Check \
     your AWS Secret Access Key and signing method. Consult the service documentation for \
     details.";

/// Why a signed request is refused before its signature is checked.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Neither the server nor the runtime knows the access key.
    UnknownKey,
    /// The `Authorization` header is malformed.
    Signature(SignatureError),
}

/// An `Authorization` header read, with its key's secret and principal: what a signature is
/// checked with.
pub(crate) struct Signed<'a> {
    authorization: sigv4::Authorization<'a>,
    secret: String,
    /// Who signs with the key.
    pub(crate) principal: Principal,
}

impl std::fmt::Debug for Signed<'_> {
    /// The access key and principal: never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("access_key", &self.authorization.access_key)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

impl Signed<'_> {
    /// The access key id the request names.
    pub(crate) fn access_key(&self) -> &str {
        self.authorization.access_key
    }

    /// Checks the signature of the request (`parts` and `payload`) for `region` and
    /// `service` at `now`.
    pub(crate) fn verify(
        &self,
        parts: &http::request::Parts,
        payload: &[u8],
        region: &str,
        service: &str,
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let request = sigv4::SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            payload,
        };
        sigv4::verify_scoped(
            &request,
            &self.authorization,
            &self.secret,
            region,
            service,
            now,
        )
    }
}

/// Reads the `Authorization` header `header` and finds its key: among the server's
/// `credentials` first, then the `runtime`'s (a function's own credentials, handed to its
/// process instances, act as the function, checked by its role).
pub(crate) fn signed_by<'a>(
    header: &'a str,
    credentials: &Credentials,
    runtime: &nimbus_core::Runtime,
) -> Result<Signed<'a>, Refused> {
    let authorization = sigv4::parse(header).map_err(Refused::Signature)?;
    let (secret, principal) = match credentials.get(authorization.access_key) {
        Some(key) => (key.secret().to_owned(), key.principal().clone()),
        None => runtime
            .credentials_of(authorization.access_key)
            .ok_or(Refused::UnknownKey)?,
    };
    Ok(Signed {
        authorization,
        secret,
        principal,
    })
}

fn signature_error(error: sigv4::SignatureError) -> AwsError {
    match error {
        sigv4::SignatureError::Incomplete(message) => AwsError::incomplete_signature(message),
        sigv4::SignatureError::Invalid(message) | sigv4::SignatureError::Expired(message) => {
            AwsError::invalid_signature(message)
        }
        sigv4::SignatureError::Mismatch => AwsError::invalid_signature(SIGNATURE_MISMATCH),
    }
}
