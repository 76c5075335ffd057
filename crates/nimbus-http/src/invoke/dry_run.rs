//! A `DryRun` invoke checks, as Lambda's does, that the caller may invoke the function, and
//! runs nothing: the runtime decides as it would for an invocation.

use nimbus_core::{CallError, Principal};

use super::error::AwsError;
use super::outcome::{invoke_error, not_found};
use super::InvokeApi;

/// Whether `caller` may invoke `name` now.
pub(crate) fn authorize(state: &InvokeApi, caller: &Principal, name: &str) -> Result<(), AwsError> {
    match state.runtime.authorize_invoke(name, caller) {
        Ok(()) => Ok(()),
        Err(CallError::Invoke(error)) => Err(invoke_error(name, &state.runtime, &error)),
        Err(_) => Err(not_found(&state.runtime, name)),
    }
}
