//! A `DryRun` invoke checks, as Lambda's does, that the caller may invoke the function, and
//! runs nothing.
//!
//! The runtime checks a caller only as it invokes, so the check is made here with the core's
//! own rule on the function's current policy (a copy, compiled for this one request: dry runs
//! are rare). Unlike a real invocation's check, it is not counted in the denial metrics.

use nimbus_core::permission::{parse_policy_document, FunctionAccess, PolicyError};
use nimbus_core::Principal;

use super::error::AwsError;
use super::outcome::not_found;
use super::InvokeApi;

/// Whether `caller` may invoke `name` now.
pub(crate) fn authorize(state: &InvokeApi, caller: &Principal, name: &str) -> Result<(), AwsError> {
    // The host is never checked: the common case costs nothing.
    if *caller == Principal::Host {
        return Ok(());
    }
    let statements = match state.runtime.get_policy(name) {
        Ok(policy) => {
            parse_policy_document(&policy.document).map_err(|e| AwsError::service(e.to_string()))?
        }
        Err(PolicyError::NoPolicy(_)) => Vec::new(),
        Err(_) => return Err(not_found(&state.runtime, name)),
    };
    let arn = state
        .runtime
        .function_arn(name)
        .ok_or_else(|| not_found(&state.runtime, name))?;
    let config = state.runtime.config();
    FunctionAccess::new(&arn, None, statements)
        .authorize_invoke(caller, None, &config.account_id, config.access)
        .map_err(|denied| AwsError::access_denied(&denied))
}
