//! The runtime's permission surface: invoking on behalf of a principal (as an HTTP front end
//! or an event source that pushes does), and reading and changing function policies
//! (`AddPermission`, `RemovePermission`, `GetPolicy`).

use super::Runtime;
use crate::async_invoke::DestinationTarget;
use crate::config::{FunctionConfig, RuntimeConfig};
use crate::error::{
    AsyncCallError, CallError, ConfigError, InvokeError, LookupError, RejectReason, Rejected,
};
use crate::executor::InvokeOptions;
use crate::function::JsonInvocation;
use crate::handler::{AwsCredentials, Caller, Principal, RequestId};
use crate::permission::{
    policy_document, Decision, ExecutionRole, Permission, PolicyError, Statement,
};

/// A function's policy as `GetPolicy` returns it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FunctionPolicy {
    /// The policy document (`{"Version", "Id", "Statement"}`).
    pub document: serde_json::Value,
    /// The policy's revision id.
    pub revision_id: String,
}

/// What `AddPermission` answers: the statement added, and the policy's new revision id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AddedPermission {
    /// The statement, as it now stands in the policy.
    pub statement: Statement,
    /// The policy's revision id after the change.
    pub revision_id: String,
}

impl Runtime {
    /// Invokes `name` with a JSON event on behalf of `principal`: checked against the
    /// function's policy (see [`permission`](crate::permission)). What an HTTP front end
    /// calls with the identity a request was signed by, and a pushing source with its service.
    pub async fn invoke_json_as(
        &self,
        principal: Principal,
        name: &str,
        event: serde_json::Value,
        options: InvokeOptions,
    ) -> JsonInvocation {
        let Some(function) = self.registry.any(name) else {
            return JsonInvocation {
                result: Err(LookupError::NotFound(name.to_owned()).into()),
                report: None,
            };
        };
        // A function's credentials act as the function: its role is checked here (the
        // function itself checks only callers that push).
        if let Err(denied) = self.registry.authorize(function.as_ref(), &principal) {
            return JsonInvocation {
                result: Err(InvokeError::AccessDenied(denied).into()),
                report: None,
            };
        }
        function
            .invoke_json(
                event,
                Caller::from(principal).vouched().inheriting(),
                options,
            )
            .await
    }

    /// Whether `principal` may invoke `name` now, decided as an invocation would be (and
    /// audited the same way), without invoking: Lambda's `DryRun`.
    ///
    /// # Errors
    ///
    /// [`CallError::Lookup`] without such a function; [`InvokeError::AccessDenied`] when the
    /// principal may not invoke it.
    pub fn authorize_invoke(&self, name: &str, principal: &Principal) -> Result<(), CallError> {
        let function = self
            .registry
            .any(name)
            .ok_or_else(|| LookupError::NotFound(name.to_owned()))?;
        self.registry
            .authorize(function.as_ref(), principal)
            .and_then(|()| match principal {
                Principal::Function(_) => Ok(()),
                other => function.authorize(other, None),
            })
            .map_err(|denied| InvokeError::AccessDenied(denied).into())
    }

    /// Queues a JSON event for `name` on behalf of `principal`; checked once, now.
    ///
    /// # Errors
    ///
    /// See [`AsyncCallError`]; a refusal (also an access denial) hands the event back.
    pub fn invoke_async_json_as(
        &self,
        principal: Principal,
        name: &str,
        event: serde_json::Value,
    ) -> Result<RequestId, AsyncCallError<serde_json::Value>> {
        let function = self
            .registry
            .any(name)
            .ok_or_else(|| LookupError::NotFound(name.to_owned()))?;
        if let Err(denied) = self.registry.authorize(function.as_ref(), &principal) {
            return Err(AsyncCallError::Rejected(Rejected {
                event,
                reason: RejectReason::AccessDenied(denied),
            }));
        }
        function.invoke_async_json(event, Caller::from(principal).vouched().inheriting())
    }

    /// Adds a statement to the policy of `name` (Lambda's `AddPermission`). With
    /// `revision_id`, refused unless the policy is still at that revision.
    ///
    /// # Errors
    ///
    /// See [`PolicyError`].
    pub fn add_permission(
        &self,
        name: &str,
        grant: &Permission,
        revision_id: Option<&str>,
    ) -> Result<AddedPermission, PolicyError> {
        let function = self
            .registry
            .any(name)
            .ok_or_else(|| PolicyError::NotFound(name.to_owned()))?;
        let (statement, policy) = function.access().add(grant, revision_id)?;
        tracing::info!(target: "nimbus::access", function = name, sid = %statement.sid, "permission added");
        Ok(AddedPermission {
            statement,
            revision_id: policy.revision_id(),
        })
    }

    /// Removes the statement `sid` from the policy of `name` (Lambda's `RemovePermission`).
    ///
    /// # Errors
    ///
    /// See [`PolicyError`].
    pub fn remove_permission(
        &self,
        name: &str,
        sid: &str,
        revision_id: Option<&str>,
    ) -> Result<(), PolicyError> {
        let function = self
            .registry
            .any(name)
            .ok_or_else(|| PolicyError::NotFound(name.to_owned()))?;
        function.access().remove(sid, revision_id)?;
        tracing::info!(target: "nimbus::access", function = name, sid, "permission removed");
        Ok(())
    }

    /// The policy of `name` (Lambda's `GetPolicy`).
    ///
    /// # Errors
    ///
    /// [`PolicyError::NotFound`] without such a function, [`PolicyError::NoPolicy`] when it has
    /// no statement.
    pub fn get_policy(&self, name: &str) -> Result<FunctionPolicy, PolicyError> {
        let function = self
            .registry
            .any(name)
            .ok_or_else(|| PolicyError::NotFound(name.to_owned()))?;
        let policy = function.access().policy();
        if policy.statements().is_empty() {
            return Err(PolicyError::NoPolicy(name.to_owned()));
        }
        Ok(FunctionPolicy {
            document: policy_document(policy.statements()),
            revision_id: policy.revision_id(),
        })
    }

    /// The execution role of `name`, if it has one (mappings check it when attached).
    pub fn function_role(&self, name: &str) -> Option<ExecutionRole> {
        self.registry.any(name).and_then(|f| f.access().role())
    }

    /// Replaces the execution role of `name`. Mappings feeding it check their source against
    /// the new role before their next receive, and stop if it no longer allows them.
    ///
    /// # Errors
    ///
    /// [`LookupError::NotFound`] without such a function.
    pub fn set_role(&self, name: &str, role: Option<ExecutionRole>) -> Result<(), LookupError> {
        let function = self
            .registry
            .any(name)
            .ok_or_else(|| LookupError::NotFound(name.to_owned()))?;
        tracing::info!(target: "nimbus::access", function = name, role = role.as_ref().map(ExecutionRole::arn), "role changed");
        function.access().set_role(role);
        Ok(())
    }

    /// Lets requests signed with `credentials` act as `identity`, a
    /// [`Principal::Identity`] (an HTTP front end looks the key up with
    /// [`Runtime::credentials_of`]); replaces an earlier entry for the same key.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] on `principal` for any other principal: a key standing for the host,
    /// a mapping or a function would skip the checks that principal is spared.
    pub fn add_credentials(
        &self,
        credentials: AwsCredentials,
        identity: Principal,
    ) -> Result<(), ConfigError> {
        if !matches!(identity, Principal::Identity { .. }) {
            return Err(ConfigError::new(
                "credentials",
                "principal",
                identity.to_string(),
                "Principal::Identity",
            ));
        }
        self.registry.credentials.insert(
            credentials.access_key_id,
            (credentials.secret_access_key, identity),
        );
        Ok(())
    }

    /// The secret of `access_key_id` and the principal it stands for.
    pub fn credentials_of(&self, access_key_id: &str) -> Option<(String, Principal)> {
        self.registry
            .credentials
            .get(access_key_id)
            .map(|entry| entry.value().clone())
    }

    /// The credentials the code of the function `name` signs AWS SDK calls with, issued on
    /// first request; they act as the function (checked by its role). `None` without such a
    /// function.
    pub fn function_credentials(&self, name: &str) -> Option<AwsCredentials> {
        self.registry.function_credentials(name)
    }

    /// Records the URL of the Invoke API serving this runtime, which process instances get as
    /// `AWS_ENDPOINT_URL_LAMBDA`; an HTTP front end sets it when it binds.
    pub fn set_lambda_endpoint(&self, url: Option<String>) {
        *self.registry.lambda_endpoint.write() = url;
    }

    /// The URL of the Invoke API serving this runtime, if any.
    pub fn lambda_endpoint(&self) -> Option<String> {
        self.registry.lambda_endpoint.read().clone()
    }

    /// The settings of the permission model, shared by everything that checks access.
    pub fn access_settings(&self) -> crate::permission::AccessSettings {
        self.shared.config.access
    }
}

/// Refuses a function whose role does not allow what its destinations and dead-letter target
/// do, when they are configured (as Lambda checks them), not at the first failure.
pub(super) fn check_destinations(
    config: &FunctionConfig,
    targets: &[(&'static str, DestinationTarget)],
    runtime: &RuntimeConfig,
) -> Result<(), ConfigError> {
    let settings = runtime.access;
    if !settings.enforce {
        return Ok(());
    }
    for (setting, target) in targets {
        let refusal = match &config.role {
            Some(role) => match role.evaluate(&target.action, &target.arn) {
                Decision::Allow(_) => continue,
                _ => format!("{} may not {} on {}", role.arn(), target.action, target.arn),
            },
            None if settings.require => format!(
                "no role (permissions are required) may not {} on {}",
                target.action, target.arn
            ),
            None => continue,
        };
        return Err(ConfigError::new(
            "function",
            "role",
            refusal,
            format!("a role allowing what the {setting} destination does"),
        ));
    }
    Ok(())
}
