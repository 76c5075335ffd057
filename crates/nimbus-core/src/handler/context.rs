//! What a handler knows about its invocation: [`Context`], and [`InitContext`] for the init phase.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A request id, unique within the process and very likely across processes: 64 random bits
/// chosen when the runtime starts, and a 64-bit sequence. Displayed in UUID form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u128);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (v >> 96) as u32,
            (v >> 80) as u16,
            (v >> 64) as u16,
            (v >> 48) as u16,
            v & 0xffff_ffff_ffff
        )
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

/// Who invoked a function. The hook for permissions later on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Invoker {
    /// The host application, directly.
    #[default]
    Host,
    /// Another function (by name).
    Function(Arc<str>),
    /// An event source mapping (by name).
    EventSource(Arc<str>),
    /// The asynchronous invocation queue of the function.
    AsyncQueue,
    /// Any other identity the host chooses.
    Custom(Arc<str>),
}

impl fmt::Display for Invoker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Host => f.write_str("host"),
            Self::Function(name) => write!(f, "function:{name}"),
            Self::EventSource(name) => write!(f, "event-source:{name}"),
            Self::AsyncQueue => f.write_str("async-queue"),
            Self::Custom(name) => write!(f, "custom:{name}"),
        }
    }
}

/// The invocation's context, handed to the handler with its event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Context {
    pub(crate) request_id: RequestId,
    pub(crate) function_name: Arc<str>,
    pub(crate) memory_mb: u32,
    pub(crate) deadline: Instant,
    pub(crate) attempt: u32,
    pub(crate) invoker: Invoker,
    pub(crate) cancel: Arc<CancellationToken>,
}

impl Context {
    /// A context for calling a handler directly, outside a runtime (tests, benches):
    /// request id 0, 128 MB, a deadline `timeout` from now (saturating: `Duration::MAX` is a
    /// deadline decades away), first attempt, invoked by the host.
    pub fn detached(function_name: &str, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            request_id: RequestId(0),
            function_name: Arc::from(function_name),
            memory_mb: 128,
            deadline: now
                .checked_add(timeout)
                .unwrap_or_else(crate::runtime::far_future),
            attempt: 1,
            invoker: Invoker::Host,
            cancel: Arc::new(CancellationToken::new()),
        }
    }

    /// This invocation's request id.
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The function's name.
    pub fn function_name(&self) -> &str {
        &self.function_name
    }

    /// The function's memory size in MB.
    pub fn memory_mb(&self) -> u32 {
        self.memory_mb
    }

    /// When the invocation times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before the timeout (zero once it has passed).
    pub fn remaining_time(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Which attempt this is: 1 for the first, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Who invoked the function.
    pub fn invoker(&self) -> &Invoker {
        &self.invoker
    }

    /// Fires at the timeout, or when the runtime starts shutting down. Work the handler spawns
    /// should stop when it fires; the handler itself is dropped at the timeout, or at the end
    /// of the shutdown grace period.
    ///
    /// The token belongs to the instance, as a Lambda environment's lifetime does: a timed-out
    /// instance is discarded with everything it started, including work that an earlier
    /// invocation left running.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }
}

/// What the init phase knows: the function it builds an instance of.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InitContext {
    pub(crate) function_name: Arc<str>,
    pub(crate) memory_mb: u32,
    pub(crate) instance_number: u64,
    pub(crate) provisioned: bool,
}

impl InitContext {
    /// The function's name.
    pub fn function_name(&self) -> &str {
        &self.function_name
    }

    /// The function's memory size in MB.
    pub fn memory_mb(&self) -> u32 {
        self.memory_mb
    }

    /// A number counting the function's instances from 1.
    pub fn instance_number(&self) -> u64 {
        self.instance_number
    }

    /// Whether this instance is provisioned ahead of load (`min_instances`) rather than a cold start.
    pub fn provisioned(&self) -> bool {
        self.provisioned
    }
}
