//! Permissions, as Lambda has them on both sides of a function: its **policy** (a resource
//! policy: who may invoke it) and its **execution role** (what its own code may reach).
//!
//! - [`statement`]: statements in IAM's JSON shape; [`glob`]: `StringLike`/`ArnLike` matching.
//! - [`policy`]: `AddPermission` grants ([`Permission`]) and the `GetPolicy` document.
//! - [`evaluate`]: policies compiled for the hot path, and their [`Decision`]s.
//! - [`role`]: [`ExecutionRole`]s, checked when a handler asks the runtime to act.
//! - [`access`]: a function's policy state, and the rule combining caller, role and policy.
//!
//! # Where each check happens
//!
//! - The host (a [`FunctionHandle`](crate::FunctionHandle) or [`Runtime`](crate::Runtime)
//!   call) is trusted: never checked.
//! - Callers that push — HTTP callers ([`Principal::Identity`](crate::Principal::Identity),
//!   [`Principal::Anonymous`](crate::Principal::Anonymous)), services
//!   ([`Principal::Service`](crate::Principal::Service)) — are checked against the function's
//!   policy on every synchronous invocation, and once when an asynchronous one is accepted
//!   (not again on its retries).
//! - Another function ([`Principal::Function`](crate::Principal::Function)) is checked by its
//!   role and the called function's policy, where its role is known (the runtime's registry):
//!   same account, so either may allow it, and an explicit deny in either refuses it. A
//!   caller the registry does not know, or a handle acting as a function, is refused.
//! - A mapping that polls is authorised through its function's role when it is attached (a
//!   queue mapping again after every change of the role, stopping if it is no longer
//!   allowed; a stream mapping only when attached); it is not checked per invocation.
//!
//! # Evaluation
//!
//! An explicit `Deny` wins; otherwise an `Allow` allows; otherwise the request is refused,
//! except for an identity of the runtime's own account (trusted unless
//! [`AccessSettings::trust_same_account`] is off) and a function without a role (the host's own
//! code, unless [`AccessSettings::require`] is on). A condition key the request does not carry
//! makes its condition false (a negated one true).

pub mod access;
mod cache;
pub mod evaluate;
pub mod glob;
pub mod policy;
pub mod role;
pub mod statement;

pub use access::{audit, AccessSettings, FunctionAccess, PolicyError, PolicyState};
pub use evaluate::{AccessRequest, Action, CompiledPolicy, Decision, Requester};
pub use policy::{parse_policy_document, policy_document, Permission, FUNCTION_ACTIONS};
pub use role::ExecutionRole;
pub use statement::{
    validate_function_policy, validate_statements, ConditionEntry, Effect, Operator, PrincipalSpec,
    Statement,
};
