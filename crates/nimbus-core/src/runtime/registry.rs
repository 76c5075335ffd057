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
use crate::handler::{CallOrigin, Caller, Principal, RequestId, RuntimeServices};
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
}

impl Registry {
    /// The erased function `name`.
    pub(super) fn any(&self, name: &str) -> Option<Arc<dyn AnyFunction>> {
        self.functions
            .get(name)
            .map(|entry| Arc::clone(&entry.function))
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
    fn authorize(
        &self,
        target: &dyn AnyFunction,
        principal: &Principal,
    ) -> Result<(), AccessDenied> {
        // Callers that push are checked by the target itself, on every path.
        let Principal::Function(caller) = principal else {
            return Ok(());
        };
        let caller_role = self
            .functions
            .get(&**caller)
            .and_then(|entry| entry.function.access().role());
        target.authorize(principal, caller_role.as_ref())
    }
}

/// The principal and hop count an invocation asked for by `origin` runs with.
fn caller_of(origin: CallOrigin<'_>) -> Caller {
    Caller::from(origin.principal.clone()).with_hops(origin.hops)
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
}
