//! Route authorization, as a function URL's `AuthType` and API Gateway's: who may call a
//! route, and as whom its function is invoked.
//!
//! | route | request | answer / invokes as |
//! |---|---|---|
//! | [`RouteAuth::None`] | any | the host (never checked) |
//! | [`RouteAuth::ApiKey`] | `x-api-key` of [`ApiKeys`](super::ApiKeys) | the key's identity |
//! | | no `x-api-key`, or an unknown one | 403 `Forbidden`, `ForbiddenException` |
//! | [`RouteAuth::AwsIam`] | SigV4-signed for `execute-api` | the signer |
//! | | no `Authorization` header | 403 `Missing Authentication Token`, `MissingAuthenticationTokenException` |
//! | | malformed `Authorization` header, no `X-Amz-Date` | 403 `IncompleteSignatureException` |
//! | | unknown access key | 403 `The security token included in the request is invalid.`, `UnrecognizedClientException` |
//! | | wrong signature, scope or signed headers; expired | 403 `InvalidSignatureException` |
//!
//! A caller the function's policy refuses gets 403 `Forbidden` (`ForbiddenException`), never
//! why.

use std::time::SystemTime;

use axum::response::Response;
use http::request::Parts;
use http::StatusCode;
use nimbus_core::{Principal, Runtime};

use super::answer;
use super::api_keys::ApiKeys;
use crate::auth::{self, Credentials, Refused, SignatureError};

/// The header that carries an API key.
const X_API_KEY: &str = "x-api-key";

/// Who may call a route, and as whom its function is invoked: a function URL's `AuthType`
/// (`NONE`, `AWS_IAM`), or a REST API method's API key requirement.
///
/// ```
/// use nimbus_http::{Route, RouteAuth};
///
/// let route = Route::new("POST", "/orders", "orders")?.with_auth(RouteAuth::ApiKey);
/// assert_eq!(route.auth(), RouteAuth::ApiKey);
/// # Ok::<(), nimbus_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RouteAuth {
    /// Anyone may call; the function is invoked as the host, unchecked (the default).
    #[default]
    None,
    /// The request must carry one of the host's [`ApiKeys`](crate::ApiKeys) in `x-api-key`
    /// (REST API's `apiKeyRequired`); the function is invoked as that key's identity, checked
    /// against its policy.
    ApiKey,
    /// The request must be SigV4-signed for the service `execute-api` with a key of the
    /// server's [`Credentials`] or the runtime's own
    /// ([`Runtime::credentials_of`](nimbus_core::Runtime::credentials_of)); the function is
    /// invoked as the signer, checked against its policy.
    AwsIam,
}

/// The keys the gateway checks requests with.
#[derive(Debug, Default)]
pub(crate) struct GatewayKeys {
    pub(crate) api_keys: ApiKeys,
    pub(crate) credentials: Credentials,
    /// The region signatures must be scoped to (the runtime's).
    pub(crate) region: String,
}

/// What a request proved, for its event's `requestContext`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Proof {
    /// Nothing: an open route.
    Nothing,
    /// The API key it carried.
    ApiKey(String),
    /// The access key id it was signed with.
    Signature(String),
}

impl std::fmt::Debug for Proof {
    /// Never the API key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nothing => f.write_str("Nothing"),
            Self::ApiKey(_) => f.write_str("ApiKey(..)"),
            Self::Signature(access_key) => f.debug_tuple("Signature").field(access_key).finish(),
        }
    }
}

/// Who a request invokes as, and how it proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) principal: Principal,
    pub(crate) proof: Proof,
}

impl Caller {
    /// The caller of an open route: the host.
    pub(crate) fn host() -> Self {
        Self {
            principal: Principal::Host,
            proof: Proof::Nothing,
        }
    }
}

/// Why a request may not call its route: the message and `x-amzn-ErrorType` of the 403 API
/// Gateway answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    message: String,
    error_type: &'static str,
}

impl Refusal {
    fn new(message: impl Into<String>, error_type: &'static str) -> Self {
        Self {
            message: message.into(),
            error_type,
        }
    }

    /// No API key, an unknown one, or a caller the function's policy refuses.
    pub(crate) fn forbidden() -> Self {
        Self::new("Forbidden", "ForbiddenException")
    }

    /// The 403 answer.
    pub(crate) fn answer(&self, request_id: &str) -> Response {
        answer::with_error_type(
            answer::error(StatusCode::FORBIDDEN, &self.message, request_id),
            self.error_type,
        )
    }
}

/// Who the request (`parts` with its `body`) invokes as on a route with `auth`.
///
/// # Errors
///
/// Why it may not call the route.
pub(crate) fn authenticate(
    auth: RouteAuth,
    keys: &GatewayKeys,
    runtime: &Runtime,
    parts: &Parts,
    body: &[u8],
) -> Result<Caller, Refusal> {
    match auth {
        RouteAuth::None => Ok(Caller::host()),
        RouteAuth::ApiKey => {
            let key = parts
                .headers
                .get(X_API_KEY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let principal = keys
                .api_keys
                .principal_of(key)
                .ok_or_else(Refusal::forbidden)?;
            Ok(Caller {
                principal: principal.clone(),
                proof: Proof::ApiKey(key.to_owned()),
            })
        }
        RouteAuth::AwsIam => signer(keys, runtime, parts, body),
    }
}

/// The signer of a request to an IAM route.
fn signer(
    keys: &GatewayKeys,
    runtime: &Runtime,
    parts: &Parts,
    body: &[u8],
) -> Result<Caller, Refusal> {
    let Some(header) = parts.headers.get(http::header::AUTHORIZATION) else {
        return Err(Refusal::new(
            "Missing Authentication Token",
            "MissingAuthenticationTokenException",
        ));
    };
    let header = header.to_str().map_err(|_| {
        Refusal::new(
            "The Authorization header is not text.",
            "IncompleteSignatureException",
        )
    })?;
    let signed =
        auth::signed_by(header, &keys.credentials, runtime).map_err(|refused| match refused {
            Refused::UnknownKey => Refusal::new(
                "The security token included in the request is invalid.",
                "UnrecognizedClientException",
            ),
            Refused::Signature(error) => signature_refusal(error),
        })?;
    signed
        .verify(
            parts,
            body,
            &keys.region,
            auth::EXECUTE_API,
            SystemTime::now(),
        )
        .map_err(signature_refusal)?;
    Ok(Caller {
        proof: Proof::Signature(signed.access_key().to_owned()),
        principal: signed.principal,
    })
}

fn signature_refusal(error: SignatureError) -> Refusal {
    match error {
        SignatureError::Incomplete(message) => {
            Refusal::new(message, "IncompleteSignatureException")
        }
        SignatureError::Invalid(message) | SignatureError::Expired(message) => {
            Refusal::new(message, "InvalidSignatureException")
        }
        SignatureError::Mismatch => {
            Refusal::new(auth::SIGNATURE_MISMATCH, "InvalidSignatureException")
        }
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
