//! The policy check of callers that push (HTTP callers, services): on every synchronous
//! invocation, and once when an asynchronous one is accepted. Calls from other functions are
//! checked where the caller's role is known, in the runtime's registry.

use std::sync::Arc;

use super::Executor;
use crate::error::AccessDenied;
use crate::handler::{Caller, Principal};
use crate::permission::{audit, ExecutionRole, FunctionAccess};

impl<E, O> Executor<E, O> {
    /// The function's policy and role.
    pub(crate) fn access(&self) -> &Arc<FunctionAccess> {
        &self.access
    }

    /// Whether the function's role allows `actions` on the source `source_arn` (a mapping that
    /// polls it), under the runtime's settings.
    pub(crate) fn authorize_source(
        &self,
        actions: &[&str],
        source_arn: &str,
    ) -> Result<(), AccessDenied> {
        let decided = self
            .access
            .authorize_source(actions, source_arn, self.shared.config.access);
        if let Err(denied) = &decided {
            tracing::info!(target: "nimbus::access", function = %self.name, principal = %denied.principal,
                action = %denied.action, source = source_arn, decision = "deny", "access denied");
        }
        decided
    }

    /// Whether `caller` may invoke the function. The host (no allocation: the common case)
    /// costs one branch; mappings and functions are authorised elsewhere.
    pub(crate) fn authorize(&self, caller: &Caller) -> Result<(), AccessDenied> {
        let Some(principal) = caller.shared() else {
            return Ok(());
        };
        match **principal {
            Principal::Host | Principal::EventSource(_) => return Ok(()),
            // Checked by the registry, which knows the caller's role.
            Principal::Function(_) if caller.is_vouched() => return Ok(()),
            // A handle acting as a function: its role cannot be seen from here.
            Principal::Function(_) => return self.unvouched(principal),
            _ => {}
        }
        let config = &self.shared.config;
        if self
            .access
            .allows_shared(principal, &config.account_id, config.access)
        {
            audit(&self.name, principal, &Ok(()));
            return Ok(());
        }
        self.refused(principal, None)
    }

    /// Whether `principal` may invoke the function; for another function, `caller_role` is its
    /// role. Audited: a tracing event, and a count when refused.
    pub(crate) fn authorize_call(
        &self,
        principal: &Principal,
        caller_role: Option<&ExecutionRole>,
    ) -> Result<(), AccessDenied> {
        let config = &self.shared.config;
        if self
            .access
            .allows_invoke(principal, caller_role, &config.account_id, config.access)
        {
            audit(&self.name, principal, &Ok(()));
            return Ok(());
        }
        self.refused(principal, caller_role)
    }

    /// A function principal whose role cannot be checked (no registry vouched for it, or the
    /// registry does not know it): refused, counted and audited, unless the permission model
    /// is off.
    #[cold]
    pub(crate) fn unvouched(&self, principal: &Principal) -> Result<(), AccessDenied> {
        if !self.shared.config.access.enforce {
            return Ok(());
        }
        let denied = AccessDenied::new(
            principal.to_string(),
            "lambda:InvokeFunction",
            self.access.arn(),
        );
        self.counters.access_denied();
        audit(&self.name, principal, &Err(denied.clone()));
        Err(denied)
    }

    /// A refusal: built, counted and audited off the hot path of allowed calls.
    #[cold]
    fn refused(
        &self,
        principal: &Principal,
        caller_role: Option<&ExecutionRole>,
    ) -> Result<(), AccessDenied> {
        let config = &self.shared.config;
        let decided =
            self.access
                .authorize_invoke(principal, caller_role, &config.account_id, config.access);
        if decided.is_err() {
            self.counters.access_denied();
        }
        audit(&self.name, principal, &decided);
        decided
    }
}
