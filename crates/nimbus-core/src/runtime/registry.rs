//! The [`Registry`]: the runtime's functions by name and the host's resources, and the
//! [`RuntimeServices`] that handlers' contexts call through.

use std::any::Any;
use std::sync::Arc;

use dashmap::DashMap;

use crate::error::{
    AccessDenied, AsyncCallError, CallError, InvokeError, LookupError, RejectReason, Rejected,
};
use crate::executor::InvokeOptions;
use crate::function::{AnyFunction, FunctionInner};
use crate::handler::{AwsCredentials, CallOrigin, Caller, Principal, RequestId, RuntimeServices};
use crate::util::BoxFuture;

/// A registered function: its erased view, and the same state as `Any` for typed handles.
pub(super) struct Entry {
    pub(super) function: Arc<dyn AnyFunction>,
    pub(super) typed: Arc<dyn Any + Send + Sync>,
}

/// What a runtime knows by name.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) functions: DashMap<Arc<str>, Entry>,
    pub(super) resources: DashMap<String, Arc<dyn Any + Send + Sync>>,
    /// Access key id → its secret and the principal it stands for.
    pub(super) credentials: DashMap<String, (String, Principal)>,
    /// The credentials issued to each function's code, by function name.
    pub(super) issued: DashMap<Arc<str>, AwsCredentials>,
    /// The URL of the Invoke API serving this runtime, if any.
    pub(super) lambda_endpoint: parking_lot::RwLock<Option<String>>,
}

impl Registry {
    /// The erased function `name`.
    pub(super) fn any(&self, name: &str) -> Option<Arc<dyn AnyFunction>> {
        self.functions
            .get(name)
            .map(|entry| Arc::clone(&entry.function))
    }

    /// The credentials of the function `name`'s code, issued on first request.
    pub(super) fn function_credentials(&self, name: &str) -> Option<AwsCredentials> {
        if let Some(issued) = self.issued.get(name) {
            return Some(issued.clone());
        }
        // Held while issuing: an unregister of `name` waits, then revokes what was issued.
        let entry = self.functions.get(name)?;
        Some(self.issue(Arc::clone(entry.key())))
    }

    /// Issues credentials to the function `name` (being registered: its provisioned instances
    /// start before it is in the registry), or returns those it has.
    pub(super) fn issue(&self, name: Arc<str>) -> AwsCredentials {
        self.issued
            .entry(Arc::clone(&name))
            .or_insert_with(|| {
                let fresh = AwsCredentials::generate();
                self.credentials.insert(
                    fresh.access_key_id.clone(),
                    (fresh.secret_access_key.clone(), Principal::Function(name)),
                );
                fresh
            })
            .clone()
    }

    /// Issues credentials to `name` as it is being registered, fresh (any left from an earlier
    /// registration of the name that did not finish are revoked): the guard revokes them
    /// unless the registration [keeps](IssuedGuard::keep) them, also when it is cancelled.
    pub(super) fn issue_for_registration(&self, name: &str) -> IssuedGuard<'_> {
        self.revoke_function_credentials(name);
        self.issue(Arc::from(name));
        IssuedGuard {
            registry: self,
            name: Arc::from(name),
            kept: false,
        }
    }

    /// Forgets the credentials issued to `name` (it was unregistered).
    pub(super) fn revoke_function_credentials(&self, name: &str) {
        if let Some((_, issued)) = self.issued.remove(name) {
            self.credentials.remove(&issued.access_key_id);
        }
    }

    /// The function `name` with these types.
    pub(super) fn typed<E, O>(&self, name: &str) -> Result<Arc<FunctionInner<E, O>>, LookupError>
    where
        E: Send + 'static,
        O: Send + 'static,
    {
        let entry = self
            .functions
            .get(name)
            .ok_or_else(|| LookupError::NotFound(name.to_owned()))?;
        Arc::clone(&entry.typed)
            .downcast::<FunctionInner<E, O>>()
            .map_err(|_| LookupError::WrongType(name.to_owned()))
    }
}

impl Registry {
    /// Whether `principal` may invoke `target`: a function caller with its role and the
    /// target's policy; callers that push with the target's policy.
    pub(super) fn authorize(
        &self,
        target: &dyn AnyFunction,
        principal: &Principal,
    ) -> Result<(), AccessDenied> {
        // Callers that push are checked by the target itself, on every path.
        let Principal::Function(caller) = principal else {
            return Ok(());
        };
        // A caller the registry does not know (unregistered while it runs, or named by a host)
        // has no role to check: refused, never trusted.
        let Some(caller_role) = self
            .functions
            .get(&**caller)
            .map(|entry| entry.function.access().role())
        else {
            return target.unvouched(principal);
        };
        target.authorize(principal, caller_role.as_ref())
    }
}

/// The principal and hop count an invocation asked for by `origin` runs with.
/// Only after [`Registry::authorize`] allowed it: the caller is vouched for.
fn caller_of(origin: CallOrigin<'_>) -> Caller {
    Caller::from(origin.principal.clone())
        .with_hops(origin.hops)
        .vouched()
}

// The hook of permissions and loop detection: every call names its caller and hop count.
impl RuntimeServices for Registry {
    fn invoke_json(
        &self,
        origin: CallOrigin<'_>,
        function: &str,
        event: serde_json::Value,
    ) -> BoxFuture<'_, Result<serde_json::Value, CallError>> {
        let found = self.any(function);
        let checked = found
            .as_ref()
            .map(|target| self.authorize(target.as_ref(), origin.principal));
        let caller = caller_of(origin);
        let name = function.to_owned();
        Box::pin(async move {
            let function = found.ok_or(LookupError::NotFound(name))?;
            checked
                .unwrap_or(Ok(()))
                .map_err(|denied| CallError::Invoke(InvokeError::AccessDenied(denied)))?;
            function
                .invoke_json(event, caller, InvokeOptions::default())
                .await
                .result
        })
    }

    fn invoke_async_json(
        &self,
        origin: CallOrigin<'_>,
        function: &str,
        event: serde_json::Value,
    ) -> Result<RequestId, AsyncCallError<serde_json::Value>> {
        let found = self
            .any(function)
            .ok_or_else(|| LookupError::NotFound(function.to_owned()))?;
        if let Err(denied) = self.authorize(found.as_ref(), origin.principal) {
            return Err(AsyncCallError::Rejected(Rejected {
                event,
                reason: RejectReason::AccessDenied(denied),
            }));
        }
        found.invoke_async_json(event, caller_of(origin))
    }

    fn resource(&self, _origin: CallOrigin<'_>, name: &str) -> Option<Arc<dyn Any + Send + Sync>> {
        self.resources.get(name).map(|r| Arc::clone(r.value()))
    }

    fn credentials(&self, origin: CallOrigin<'_>) -> Option<AwsCredentials> {
        match origin.principal {
            Principal::Function(name) => self.function_credentials(name),
            _ => None,
        }
    }

    fn lambda_endpoint(&self) -> Option<String> {
        self.lambda_endpoint.read().clone()
    }
}

/// Credentials issued to a function being registered: revoked on drop unless kept.
pub(super) struct IssuedGuard<'a> {
    registry: &'a Registry,
    name: Arc<str>,
    kept: bool,
}

impl IssuedGuard<'_> {
    /// The registration finished: the function keeps its credentials.
    pub(super) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for IssuedGuard<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.registry.revoke_function_credentials(&self.name);
        }
    }
}
