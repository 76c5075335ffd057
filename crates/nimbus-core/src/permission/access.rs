//! Who may invoke a function, decided: the function's policy (kept compiled, with its
//! revision), the runtime's settings, and the rule that combines a caller's role with the
//! policy of the function it calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use super::cache;
use super::evaluate::{AccessRequest, Action, CompiledPolicy, Decision, Requester, Verdict};
use super::policy::Permission;
use super::role::ExecutionRole;
use super::statement::Statement;
use crate::error::{AccessDenied, ConfigError};
use crate::handler::Principal;

/// How the runtime treats callers no statement speaks of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessSettings {
    /// Whether the permission model is enforced at all (default on). Off, every caller may
    /// invoke every function and every role allows everything, as before policies existed;
    /// policies are kept, and enforced again when it is turned back on.
    pub enforce: bool,
    /// Every function needs a role: one without may call only functions whose policy allows
    /// anyone (`*`), may not be fed by a mapping, and may not have a destination that names its
    /// target.
    /// Off (the default), a function without a role is the host's own code and unrestricted.
    /// (Services, anonymous callers and other accounts always need a policy statement; an
    /// identity of the runtime's account needs none while `trust_same_account` is on.)
    pub require: bool,
    /// An identity of the runtime's own account is allowed without a policy statement, as
    /// Lambda allows a same-account principal whose identity policy allows it (nimbus does not
    /// model identity policies of HTTP callers). On by default.
    pub trust_same_account: bool,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            enforce: true,
            require: false,
            trust_same_account: true,
        }
    }
}

impl AccessSettings {
    /// Sets [`enforce`](Self::enforce).
    #[must_use]
    pub fn with_enforce(mut self, enforce: bool) -> Self {
        self.enforce = enforce;
        self
    }

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
    /// Random per function registration: revision ids of two functions (or of one function
    /// registered twice) never coincide.
    lineage: u64,
}

impl PolicyState {
    /// The statements.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// The revision id, as Lambda's `RevisionId` (changes with every change of the policy).
    pub fn revision_id(&self) -> String {
        let lineage = self.lineage;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            lineage >> 32,
            (lineage >> 16) & 0xffff,
            (lineage >> 4) & 0xfff,
            lineage & 0xf,
            self.revision & 0xffff_ffff_ffff
        )
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
    /// Read on every checked invocation: swapped whole when the policy changes, so readers
    /// take no lock; changes are serialised by `changing`.
    policy: ArcSwap<PolicyState>,
    /// Bumped after every change of `policy`: threads' cached copies are current while it
    /// stays (see `cache`).
    generation: AtomicU64,
    /// This access state's identity in threads' caches (never reused, unlike an address).
    id: u64,
    changing: parking_lot::Mutex<()>,
}

/// The next access state's id.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl FunctionAccess {
    /// The access state of the function `arn` with `role` and the policy `statements`.
    pub fn new(arn: &str, role: Option<ExecutionRole>, statements: Vec<Statement>) -> Self {
        let compiled = CompiledPolicy::compile(&statements, arn);
        Self {
            arn: arn.into(),
            role: RwLock::new(role),
            role_version: AtomicU64::new(0),
            policy: ArcSwap::from_pointee(PolicyState {
                statements,
                compiled,
                revision: 1,
                lineage: u64::from_le_bytes(
                    crate::util::secure_random(8).try_into().unwrap_or_default(),
                ),
            }),
            generation: AtomicU64::new(0),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            changing: parking_lot::Mutex::new(()),
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
        if !settings.enforce {
            return Ok(());
        }
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
        self.policy.load_full()
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
        let _changing = self.changing.lock();
        let policy = self.policy.load_full();
        check_revision(&policy, revision)?;
        if policy.statements.iter().any(|s| s.sid == statement.sid) {
            return Err(PolicyError::DuplicateSid(statement.sid));
        }
        let mut statements = policy.statements.clone();
        statements.push(statement.clone());
        let changed = Arc::new(self.compiled(statements, policy.revision + 1, policy.lineage));
        self.policy.store(Arc::clone(&changed));
        self.generation.fetch_add(1, Ordering::Release);
        Ok((statement, changed))
    }

    /// Removes the statement `sid` (`RemovePermission`).
    ///
    /// # Errors
    ///
    /// See [`PolicyError`].
    pub fn remove(&self, sid: &str, revision: Option<&str>) -> Result<(), PolicyError> {
        let _changing = self.changing.lock();
        let policy = self.policy.load_full();
        check_revision(&policy, revision)?;
        if policy.statements.is_empty() {
            return Err(PolicyError::NoPolicy(self.arn.to_string()));
        }
        if !policy.statements.iter().any(|s| s.sid == sid) {
            return Err(PolicyError::NoSuchSid(sid.to_owned()));
        }
        let statements = policy
            .statements
            .iter()
            .filter(|s| s.sid != sid)
            .cloned()
            .collect();
        self.policy.store(Arc::new(self.compiled(
            statements,
            policy.revision + 1,
            policy.lineage,
        )));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn compiled(&self, statements: Vec<Statement>, revision: u64, lineage: u64) -> PolicyState {
        PolicyState {
            compiled: CompiledPolicy::compile(&statements, &self.arn),
            statements,
            revision,
            lineage,
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
        if self.allows_invoke(principal, caller_role, runtime_account, settings) {
            Ok(())
        } else {
            Err(self.denied(principal))
        }
    }

    /// The refusal of `principal`, built off the hot path of allowed calls.
    #[cold]
    fn denied(&self, principal: &Principal) -> AccessDenied {
        AccessDenied::new(
            principal.to_string(),
            Action::InvokeFunction.name(),
            &*self.arn,
        )
    }

    /// As [`authorize_invoke`](Self::authorize_invoke), answering only yes or no.
    #[inline]
    pub fn allows_invoke(
        &self,
        principal: &Principal,
        caller_role: Option<&ExecutionRole>,
        runtime_account: &str,
        settings: AccessSettings,
    ) -> bool {
        if !settings.enforce {
            return true;
        }
        let generation = self.generation.load(Ordering::Acquire);
        cache::with_policy(
            self.id,
            generation,
            || self.policy.load_full(),
            |policy| self.allows_under(policy, principal, caller_role, runtime_account, settings),
        )
    }

    /// As [`allows_invoke`](Self::allows_invoke) for a caller that pushes (no role), shared
    /// as it is carried: the thread remembers its last decision for this principal, as long
    /// as the policy has not changed since.
    #[inline]
    pub(crate) fn allows_shared(
        &self,
        principal: &Arc<Principal>,
        runtime_account: &str,
        settings: AccessSettings,
    ) -> bool {
        if !settings.enforce {
            return true;
        }
        let generation = self.generation.load(Ordering::Acquire);
        cache::decide_for(
            self.id,
            generation,
            principal,
            || self.policy.load_full(),
            |policy| self.allows_under(policy, principal, None, runtime_account, settings),
        )
    }

    /// The decision under `policy`.
    fn allows_under(
        &self,
        policy: &PolicyState,
        principal: &Principal,
        caller_role: Option<&ExecutionRole>,
        runtime_account: &str,
        settings: AccessSettings,
    ) -> bool {
        let mut request = AccessRequest::new(Requester::Anonymous, Action::InvokeFunction);
        // Whether the caller may go ahead when no statement of the policy speaks of it. As in
        // Lambda, a service, an anonymous caller and another account always need one.
        let without_statement: bool;
        match principal {
            Principal::Host | Principal::EventSource(_) => return true,
            Principal::Function(_) => {
                request = request_for_role(caller_role, runtime_account);
                without_statement = match caller_role
                    .map(|r| (r, r.evaluate(request.action.name(), &self.arn)))
                {
                    Some((_, Decision::Deny(_))) => return false,
                    // The same account: the role's allow is enough, unless the policy
                    // denies; a role of another account needs the policy too.
                    Some((role, Decision::Allow(_))) => role.account() == runtime_account,
                    // Across accounts both must allow: a silent role refuses.
                    Some((role, Decision::NoStatement)) if role.account() != runtime_account => {
                        return false
                    }
                    Some((_, Decision::NoStatement)) => false,
                    // A function without a role is the host's code, trusted unless roles
                    // are required.
                    None => !settings.require,
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
                without_statement = false;
            }
            Principal::Identity {
                arn,
                account,
                org_id,
            } => {
                request.requester = Requester::Aws { arn, account };
                request.principal_org_id = org_id.as_deref();
                without_statement = settings.trust_same_account && **account == *runtime_account;
            }
            Principal::Anonymous => without_statement = false,
        }
        match policy.compiled.decide(&request) {
            Verdict::Allow(_) => true,
            Verdict::Deny(_) => false,
            Verdict::NoStatement => without_statement,
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
