//! A function's resource policy over HTTP: `AddPermission`, `GetPolicy` and `RemovePermission`
//! in the shapes of Lambda's REST-JSON API, on the runtime's
//! [`add_permission`](nimbus_core::Runtime::add_permission),
//! [`get_policy`](nimbus_core::Runtime::get_policy) and
//! [`remove_permission`](nimbus_core::Runtime::remove_permission).
//!
//! | outcome | answer |
//! |---|---|
//! | statement added | 201 `{"Statement": "<the statement's JSON>"}` |
//! | policy | 200 `{"Policy": "<the document's JSON>", "RevisionId"}` |
//! | statement removed | 204 |
//! | unknown function, no policy, unknown statement id | 404 `ResourceNotFoundException` |
//! | statement id taken | 409 `ResourceConflictException` |
//! | `RevisionId` not the policy's | 412 `PreconditionFailedException` |
//! | invalid or unsupported field | 400 `InvalidParameterValueException` |
//! | body not JSON | 400 `InvalidRequestContentException` |
//! | caller may not manage policies | 403 `AccessDeniedException` |
//!
//! Who may: see `admin.rs` (the host, and identities of the runtime's own account).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use nimbus_core::permission::{Permission, PolicyError};
use nimbus_core::Principal;
use serde_json::json;

use super::error::AwsError;
use super::outcome::{not_found, request_id_header};
use super::{admin, caller, InvokeApi};
use crate::request_id::fresh_request_id;

/// The body of `AddPermission`.
#[derive(Debug, serde::Deserialize)]
struct AddPermissionBody {
    #[serde(rename = "StatementId")]
    statement_id: Option<String>,
    #[serde(rename = "Action")]
    action: Option<String>,
    #[serde(rename = "Principal")]
    principal: Option<String>,
    #[serde(rename = "SourceArn")]
    source_arn: Option<String>,
    #[serde(rename = "SourceAccount")]
    source_account: Option<String>,
    #[serde(rename = "PrincipalOrgID")]
    principal_org_id: Option<String>,
    #[serde(rename = "FunctionUrlAuthType")]
    function_url_auth_type: Option<String>,
    #[serde(rename = "RevisionId")]
    revision_id: Option<String>,
    // Fields of the model whose conditions nimbus cannot state: refused, since a grant
    // stored without its condition would let in more callers than the caller asked for.
    #[serde(rename = "EventSourceToken")]
    event_source_token: Option<serde_json::Value>,
    #[serde(rename = "InvokedViaFunctionUrl")]
    invoked_via_function_url: Option<serde_json::Value>,
}

impl AddPermissionBody {
    fn parse(body: &[u8]) -> Result<(Permission, Option<String>), AwsError> {
        let body: Self = serde_json::from_slice(body).map_err(|e| {
            AwsError::invalid_content(format!("Could not parse request body into json: {e}"))
        })?;
        let required = |value: Option<String>, field: &str| {
            value.ok_or_else(|| {
                AwsError::invalid_parameter(format!("{field} is required for AddPermission"))
            })
        };
        for (value, field) in [
            (&body.event_source_token, "EventSourceToken"),
            (&body.invoked_via_function_url, "InvokedViaFunctionUrl"),
        ] {
            if value.as_ref().is_some_and(|v| !v.is_null()) {
                return Err(AwsError::invalid_parameter(format!(
                    "{field} is not supported by nimbus"
                )));
            }
        }
        let mut grant = Permission::new(
            required(body.statement_id, "StatementId")?,
            required(body.action, "Action")?,
            required(body.principal, "Principal")?,
        );
        if let Some(arn) = body.source_arn {
            grant = grant.with_source_arn(arn);
        }
        if let Some(account) = body.source_account {
            grant = grant.with_source_account(account);
        }
        if let Some(org) = body.principal_org_id {
            grant = grant.with_principal_org_id(org);
        }
        if let Some(auth) = body.function_url_auth_type {
            grant = grant.with_function_url_auth_type(auth);
        }
        Ok((grant, body.revision_id))
    }
}

/// `POST /2015-03-31/functions/{name}/policy` (`AddPermission`).
pub(crate) async fn add_permission(
    State(state): State<Arc<InvokeApi>>,
    Path(raw_name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    principal: Option<Extension<Principal>>,
    body: Bytes,
) -> Response {
    let managed = admin::authorize(
        &state,
        &caller(principal),
        Some(&raw_name),
        "lambda:AddPermission",
    );
    answer(managed.and_then(|()| {
        let name = super::resolve(&state, &raw_name, &query)?;
        let (grant, revision) = AddPermissionBody::parse(&body)?;
        let added = state
            .runtime
            .add_permission(&name, &grant, revision.as_deref())
            .map_err(|e| policy_error(&state, &name, e))?;
        let statement = serde_json::to_string(&added.statement)
            .map_err(|e| AwsError::service(e.to_string()))?;
        Ok((StatusCode::CREATED, json!({ "Statement": statement })))
    }))
}

/// `GET /2015-03-31/functions/{name}/policy` (`GetPolicy`).
pub(crate) async fn get_policy(
    State(state): State<Arc<InvokeApi>>,
    Path(raw_name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let managed = admin::authorize(
        &state,
        &caller(principal),
        Some(&raw_name),
        "lambda:GetPolicy",
    );
    answer(managed.and_then(|()| {
        let name = super::resolve(&state, &raw_name, &query)?;
        let policy = state
            .runtime
            .get_policy(&name)
            .map_err(|e| policy_error(&state, &name, e))?;
        Ok((
            StatusCode::OK,
            json!({"Policy": policy.document.to_string(), "RevisionId": policy.revision_id}),
        ))
    }))
}

/// `DELETE /2015-03-31/functions/{name}/policy/{sid}` (`RemovePermission`).
pub(crate) async fn remove_permission(
    State(state): State<Arc<InvokeApi>>,
    Path((raw_name, sid)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let managed = admin::authorize(
        &state,
        &caller(principal),
        Some(&raw_name),
        "lambda:RemovePermission",
    );
    let removed = managed.and_then(|()| {
        let name = super::resolve(&state, &raw_name, &query)?;
        let revision = query.get("RevisionId").map(String::as_str);
        state
            .runtime
            .remove_permission(&name, &sid, revision)
            .map_err(|e| policy_error(&state, &name, e))
    });
    let response = match removed {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    };
    with_request_id(response)
}

/// A JSON answer or an error, with a request id either way (the SDKs show it to users).
fn answer(result: Result<(StatusCode, serde_json::Value), AwsError>) -> Response {
    let response = match result {
        Ok((status, body)) => (status, axum::Json(body)).into_response(),
        Err(error) => error.into_response(),
    };
    with_request_id(response)
}

fn with_request_id(mut response: Response) -> Response {
    let (name, value) = request_id_header(&fresh_request_id());
    response.headers_mut().insert(name, value);
    response
}

/// The AWS error of a refused policy change. Messages name the statement id the caller gave,
/// never another statement of the policy.
fn policy_error(state: &InvokeApi, name: &str, error: PolicyError) -> AwsError {
    match error {
        PolicyError::Invalid(invalid) => AwsError::invalid_parameter(invalid.to_string()),
        PolicyError::DuplicateSid(sid) => AwsError::conflict(format!(
            "The statement id ({sid}) provided already exists. Please provide a new statement \
             id, or remove the existing statement."
        )),
        PolicyError::NoSuchSid(sid) => AwsError::resource_not_found(format!(
            "Statement {sid} is not found in resource policy."
        )),
        PolicyError::NoPolicy(_) => {
            AwsError::resource_not_found("The resource you requested does not exist.")
        }
        PolicyError::RevisionMismatch => AwsError::precondition_failed(
            "The Revision Id provided does not match the latest Revision Id. Call the GetPolicy \
             API to retrieve the latest Revision Id",
        ),
        PolicyError::NotFound(_) => not_found(&state.runtime, name),
        other => AwsError::service(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_permission_body_becomes_a_grant_and_its_revision() {
        let body = br#"{"StatementId":"s3","Action":"lambda:InvokeFunction",
            "Principal":"s3.amazonaws.com","SourceArn":"arn:aws:s3:::photos",
            "SourceAccount":"123456789012","PrincipalOrgID":"o-abc","RevisionId":"r1"}"#;
        let (grant, revision) = AddPermissionBody::parse(body).unwrap();
        let expected = Permission::new("s3", "lambda:InvokeFunction", "s3.amazonaws.com")
            .with_source_arn("arn:aws:s3:::photos")
            .with_source_account("123456789012")
            .with_principal_org_id("o-abc");
        assert_eq!(grant, expected);
        assert_eq!(revision.as_deref(), Some("r1"));
    }

    #[test]
    fn a_condition_nimbus_cannot_state_or_a_missing_field_is_refused() {
        let code = |body: &[u8]| AddPermissionBody::parse(body).unwrap_err();
        let refused = code(
            br#"{"StatementId":"u","Action":"lambda:InvokeFunction","Principal":"*",
                 "InvokedViaFunctionUrl":true}"#,
        );
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(refused.body().contains("InvokedViaFunctionUrl"));
        let missing = code(br#"{"StatementId":"u","Action":"lambda:InvokeFunction"}"#);
        assert!(missing.body().contains("Principal is required"));
        let garbled = code(b"{");
        assert!(garbled.body().contains("Could not parse"));
    }
}
