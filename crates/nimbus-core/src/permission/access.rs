//! Who may invoke a function, decided: the function's policy (kept compiled, with its
//! revision), the runtime's settings, and the rule that combines a caller's role with the
//! policy of the function it calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::evaluate::{AccessRequest, Action, CompiledPolicy, Decision, Requester};
use super::policy::Permission;
use super::role::ExecutionRole;
use super::statement::Statement;
use crate::error::{AccessDenied, ConfigError};
use crate::handler::Principal;

/// How the runtime treats callers no statement speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessSettings {
    /// Every caller but the host and mappings needs a statement: a function without a policy
    /// may be invoked by nobody else, and a function without a role may call nothing.
    /// Off (the default), a function with neither keeps nimbus's open behaviour.
    pub require: bool,
    /// An identity of the runtime's own account is allowed without a policy statement, as
    /// Lambda allows a same-account principal whose identity policy allows it (nimbus does not
    /// model identity policies of HTTP callers). On by default.
    pub trust_same_account: bool,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            require: false,
            trust_same_account: true,
        }
    }
}

impl AccessSettings {
    /// Sets [`require`](Self::require).
    #[must_use]
    pub fn with_require(mut self, require: bool) -> Self {
        self.require = require;
        self
    }

    /// Sets [`trust_same_account`](Self::trust_same_account).
    #[must_use]
    pub fn with_trust_same_account(mut self, trusted: bool) -> Self {
        self.trust_same_account = trusted;
        self
    }
}

/// A function policy as it stands: its statements, compiled, and its revision.
#[derive(Debug, Default)]
pub struct PolicyState {
    statements: Vec<Statement>,
    compiled: CompiledPolicy,
    revision: u64,
}

impl PolicyState {
    /// The statements.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// The revision id, as Lambda's `RevisionId` (changes with every change of the policy).
    pub fn revision_id(&self) -> String {
        format!("00000000-0000-4000-8000-{:012x}", self.revision)
    }
}

/// Why a change of a function's policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The grant is invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// A statement with this id exists (Lambda: `ResourceConflictException`).
    #[error("the statement id ({0}) provided already exists; use a different statement id")]
    DuplicateSid(String),
    /// No statement has this id (Lambda: `ResourceNotFoundException`).
    #[error("the statement id ({0}) is not in the policy")]
    NoSuchSid(String),
    /// The function has no policy (Lambda: `ResourceNotFoundException`).
    #[error("the resource you requested does not exist: function {0} has no policy")]
    NoPolicy(String),
    /// The caller's revision id is not the policy's (Lambda: `PreconditionFailedException`).
    #[error(
        "the revision id provided does not match the latest revision id; call get_policy to see it"
    )]
    RevisionMismatch,
    /// No function has this name.
    #[error("function not found: {0}")]
    NotFound(String),
}

/// A function's access state: its ARN, its role and its policy.
#[derive(Debug)]
pub struct FunctionAccess {
    arn: Arc<str>,
    role: RwLock<Option<ExecutionRole>>,
    /// Bumped by every change of the role: mappings re-check their source only then.
    role_version: AtomicU64,
    policy: RwLock<Arc<PolicyState>>,
}

impl FunctionAccess {
    /// The access state of the function `arn` with `role` and the policy `statements`.
    pub fn new(arn: &str, role: Option<ExecutionRole>, statements: Vec<Statement>) -> Self {
        let compiled = CompiledPolicy::compile(&statements, arn);
        Self {
            arn: arn.into(),
            role: RwLock::new(role),
            role_version: AtomicU64::new(0),
            policy: RwLock::new(Arc::new(PolicyState {
                statements,
                compiled,
                revision: 1,
            })),
        }
    }

    /// The function's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The function's execution role.
    pub fn role(&self) -> Option<ExecutionRole> {
        self.role.read().clone()
    }

    /// Replaces the function's execution role.
    pub fn set_role(&self, role: Option<ExecutionRole>) {
        *self.role.write() = role;
        self.role_version.fetch_add(1, Ordering::Release);
    }

    /// A number that changes whenever the role does.
    pub fn role_version(&self) -> u64 {
        self.role_version.load(Ordering::Acquire)
    }

    /// Whether the function's role allows every one of `actions` on the source `source_arn`
    /// (what a mapping that polls needs). Without a role: allowed unless `settings.require`.
    ///
    /// # Errors
    ///
    /// [`AccessDenied`] naming the role, the first action not allowed and the source.
    pub fn authorize_source(
        &self,
        actions: &[&str],
        source_arn: &str,
        settings: AccessSettings,
    ) -> Result<(), AccessDenied> {
        let role = self.role.read();
        let Some(role) = role.as_ref() else {
            return match actions.first() {
                Some(action) if settings.require => Err(AccessDenied::new(
                    format!("function {} (no role)", self.arn),
                    *action,
                    source_arn,
                )),
                _ => Ok(()),
            };
        };
        role.allows_all(actions, source_arn)
            .map_err(|action| AccessDenied::new(role.arn(), action, source_arn))
    }

    /// The policy as it stands.
    pub fn policy(&self) -> Arc<PolicyState> {
        Arc::clone(&self.policy.read())
    }

    /// Adds `grant`'s statement (`AddPermission`); the new policy's state. With `revision`,
    /// refused unless it is the policy's current revision id.
    ///
    /// # Errors
    ///
    /// See [`PolicyError`].
    pub fn add(
        &self,
        grant: &Permission,
        revision: Option<&str>,
    ) -> Result<(Statement, Arc<PolicyState>), PolicyError> {
        let statement = grant.to_statement(&self.arn)?;
        let mut policy = self.policy.write();
        check_revision(&policy, revision)?;
        if policy.statements.iter().any(|s| s.sid == statement.sid) {
            return Err(PolicyError::DuplicateSid(statement.sid));
        }
        let mut statements = policy.statements.clone();
        statements.push(statement.clone());
        *policy = Arc::new(self.compiled(statements, policy.revision + 1));
        Ok((statement, Arc::clone(&policy)))
    }

    /// Removes the statement `sid` (`RemovePermission`).
    ///
    /// # Errors
    ///
    /// See [`PolicyError`].
    pub fn remove(&self, sid: &str, revision: Option<&str>) -> Result<(), PolicyError> {
        let mut policy = self.policy.write();
        check_revision(&policy, revision)?;
        if !policy.statements.iter().any(|s| s.sid == sid) {
            return Err(PolicyError::NoSuchSid(sid.to_owned()));
        }
        let statements = policy
            .statements
            .iter()
            .filter(|s| s.sid != sid)
            .cloned()
            .collect();
        *policy = Arc::new(self.compiled(statements, policy.revision + 1));
        Ok(())
    }

    fn compiled(&self, statements: Vec<Statement>, revision: u64) -> PolicyState {
        PolicyState {
            compiled: CompiledPolicy::compile(&statements, &self.arn),
            statements,
            revision,
        }
    }

    /// Whether `principal` may invoke this function (for a [`Principal::Function`], with the
    /// caller's `caller_role`), under `settings`. The host and mappings always may: a mapping
    /// that polls is authorised through its function's role when it is attached.
    ///
    /// # Errors
    ///
    /// [`AccessDenied`] naming the principal, the action and the function.
    pub fn authorize_invoke(
        &self,
        principal: &Principal,
        caller_role: Option<&ExecutionRole>,
        runtime_account: &str,
        settings: AccessSettings,
    ) -> Result<(), AccessDenied> {
        let denied = || {
            AccessDenied::new(
                principal.to_string(),
                Action::InvokeFunction.name(),
                &*self.arn,
            )
        };
        let mut request = AccessRequest::new(Requester::Anonymous, Action::InvokeFunction);
        // Whether the caller may go ahead when no statement speaks of it: `Some` whatever the
        // policy holds, `None` only while the function has no policy (and none is required).
        let without_statement: Option<bool>;
        match principal {
            Principal::Host | Principal::EventSource(_) => return Ok(()),
            Principal::Function(_) => {
                request = request_for_role(caller_role, runtime_account);
                without_statement =
                    match caller_role.map(|r| r.evaluate(request.action.name(), &self.arn)) {
                        Some(Decision::Deny(_)) => return Err(denied()),
                        // Same account: the role's allow is enough, unless the policy denies.
                        Some(Decision::Allow(_)) => Some(true),
                        Some(Decision::NoStatement) => Some(false),
                        // A function without a role is the host's code, trusted unless required.
                        None => Some(!settings.require),
                    };
            }
            Principal::Service {
                service,
                source_arn,
                source_account,
            } => {
                request.requester = Requester::Service(service);
                request.source_arn = source_arn.as_deref();
                request.source_account = source_account.as_deref();
                without_statement = None;
            }
            Principal::Identity {
                arn,
                account,
                org_id,
            } => {
                request.requester = Requester::Aws { arn, account };
                request.principal_org_id = org_id.as_deref();
                let trusted = settings.trust_same_account && **account == *runtime_account;
                without_statement = trusted.then_some(true);
            }
            Principal::Anonymous => without_statement = None,
        }
        let policy = self.policy.read();
        let open =
            without_statement.unwrap_or_else(|| policy.compiled.is_empty() && !settings.require);
        match policy.compiled.evaluate(&request) {
            Decision::Allow(_) => Ok(()),
            Decision::Deny(_) => Err(denied()),
            Decision::NoStatement if open => Ok(()),
            Decision::NoStatement => Err(denied()),
        }
    }
}

/// The request a function's call makes: as its role, in the runtime's account; without a role,
/// as nobody a statement could name but `*`.
fn request_for_role<'a>(
    role: Option<&'a ExecutionRole>,
    runtime_account: &'a str,
) -> AccessRequest<'a> {
    let requester = role.map_or(Requester::Anonymous, |role| Requester::Aws {
        arn: role.arn(),
        account: if role.account().is_empty() {
            runtime_account
        } else {
            role.account()
        },
    });
    AccessRequest::new(requester, Action::InvokeFunction)
}

fn check_revision(policy: &PolicyState, revision: Option<&str>) -> Result<(), PolicyError> {
    match revision {
        Some(given) if given != policy.revision_id() => Err(PolicyError::RevisionMismatch),
        _ => Ok(()),
    }
}

/// Emits the structured event of one decision (target `nimbus::access`): allowed at debug,
/// refused at info, naming the function, the principal and the action, never the statement.
pub fn audit(function: &str, principal: &Principal, decided: &Result<(), AccessDenied>) {
    match decided {
        Ok(()) => tracing::debug!(target: "nimbus::access", function, %principal,
            action = Action::InvokeFunction.name(), decision = "allow", "access decision"),
        Err(denied) => tracing::info!(target: "nimbus::access", function, %principal,
            action = %denied.action, decision = "deny", "access denied"),
    }
}
