//! What invocations share: [`FunctionScope`], one per function, and [`InstanceScope`], one
//! per instance (its cancellation token and log stream). Each is cloned (one reference count)
//! into every context, so that a context carries Lambda's names without allocating them.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Caller, Principal, RuntimeServices};
use crate::util::aws;

/// What every invocation of one function shares: built once per function.
pub(crate) struct FunctionScope {
    pub(super) function_name: Arc<str>,
    pub(super) memory_mb: u32,
    /// The function's ARN in the runtime's region and account.
    pub(super) arn: Arc<str>,
    /// `/aws/lambda/<name>`.
    pub(super) log_group: Box<str>,
    /// The function's timeout: a context's deadline less it is when the invocation started.
    pub(super) timeout: Duration,
    /// A moment read on both clocks, to place an invocation's start in wall-clock time
    /// without reading the clock per invocation.
    clock_base: (Instant, Duration),
    /// The principal of calls this function's handlers make.
    pub(super) as_caller: Caller,
    pub(super) services: Services,
}

/// How a context reaches its runtime.
pub(super) enum Services {
    /// A detached context.
    None,
    /// A registered function's: weak, so that a function does not keep its runtime alive.
    Runtime(Weak<dyn RuntimeServices>),
    /// A stand-in given to a detached context.
    Given(Arc<dyn RuntimeServices>),
}

impl FunctionScope {
    pub(crate) fn new(
        function_name: Arc<str>,
        memory_mb: u32,
        timeout: Duration,
        arn: Arc<str>,
        services: Option<Weak<dyn RuntimeServices>>,
    ) -> Self {
        Self {
            as_caller: Caller::from(Principal::Function(Arc::clone(&function_name))),
            log_group: aws::log_group_name(&function_name).into(),
            function_name,
            memory_mb,
            arn,
            timeout,
            clock_base: (
                Instant::now(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
            services: services.map_or(Services::None, Services::Runtime),
        }
    }

    /// A copy with other services (the function's other parts shared).
    pub(super) fn with_services(&self, services: Services) -> Self {
        Self {
            function_name: Arc::clone(&self.function_name),
            memory_mb: self.memory_mb,
            arn: Arc::clone(&self.arn),
            log_group: self.log_group.clone(),
            timeout: self.timeout,
            clock_base: self.clock_base,
            as_caller: self.as_caller.clone(),
            services,
        }
    }

    /// The runtime's services, if the function still has a runtime.
    pub(super) fn services(&self) -> Option<Arc<dyn RuntimeServices>> {
        match &self.services {
            Services::Runtime(weak) => weak.upgrade(),
            Services::Given(services) => Some(Arc::clone(services)),
            Services::None => None,
        }
    }

    /// Seconds since the epoch at which an invocation with this `deadline` started.
    pub(super) fn started_epoch_secs(&self, deadline: Instant) -> u64 {
        let (base_instant, base_epoch) = self.clock_base;
        let start = deadline.checked_sub(self.timeout).unwrap_or(base_instant);
        (base_epoch + start.saturating_duration_since(base_instant)).as_secs()
    }
}

impl std::fmt::Debug for FunctionScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionScope")
            .field("function_name", &self.function_name)
            .field("memory_mb", &self.memory_mb)
            .finish_non_exhaustive()
    }
}

/// What belongs to one instance: its function's scope, its cancellation token, its log stream,
/// and whether it is one of the function's provisioned instances.
///
/// The token belongs to the instance, like a Lambda environment's lifetime: it fires when an
/// invocation on it times out (and the instance is discarded) or at shutdown, so work an
/// earlier invocation left running stops with it.
#[derive(Debug)]
pub(crate) struct InstanceScope {
    /// The function's scope, reached through the instance so that an invocation's context
    /// clones one `Arc` (the instance's, which stays on few threads) rather than also the
    /// function's, which every thread running the function shares.
    pub(crate) function: Arc<FunctionScope>,
    pub(crate) cancel: CancellationToken,
    pub(super) log_stream: Box<str>,
    /// Provisioned (`min_instances`): never reaped, its invocations metered as provisioned.
    pub(crate) provisioned: bool,
}

impl InstanceScope {
    /// The scope of an instance created now: a fresh token, and a log stream named for today.
    pub(crate) fn new(function: Arc<FunctionScope>, provisioned: bool) -> Self {
        Self {
            function,
            cancel: CancellationToken::new(),
            log_stream: aws::log_stream_name(SystemTime::now(), fastrand::u128(..)).into(),
            provisioned,
        }
    }

    /// The same instance, of a function scope given in place of its own (a detached context
    /// given services): the token is shared, so cancelling one cancels the other.
    pub(crate) fn with_function(&self, function: Arc<FunctionScope>) -> Self {
        Self {
            function,
            cancel: self.cancel.clone(),
            log_stream: self.log_stream.clone(),
            provisioned: self.provisioned,
        }
    }

    /// The instance's log stream, `YYYY/MM/DD/[$LATEST]<32 hex>`.
    pub(crate) fn log_stream(&self) -> &str {
        &self.log_stream
    }
}
