//! A function's configuration, validated when it is built.

use std::time::Duration;

use crate::error::ConfigError;
use crate::handler::RecursiveLoop;
use crate::permission::{ExecutionRole, Statement};
use crate::retry::Backoff;

/// Limits of [`FunctionConfig`] fields, as published by AWS Lambda.
pub mod limits {
    use std::time::Duration;

    /// Shortest timeout. Lambda's is 1 s, in whole seconds; nimbus takes any duration from
    /// 1 ms, deliberately: in-process handlers and tests need sub-second timeouts.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
    /// Longest timeout (Lambda: 900 s).
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(900);
    /// Smallest memory size in MB.
    pub const MIN_MEMORY_MB: u32 = 128;
    /// Largest memory size in MB.
    pub const MAX_MEMORY_MB: u32 = 10_240;
    /// Longest init phase (Lambda: 10 s).
    pub const MAX_INIT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Most provisioned instances (the largest runtime concurrency limit); a function without
    /// `max_concurrency` is also held to its runtime's `concurrency_limit`.
    pub const MAX_MIN_INSTANCES: u32 = 1_000_000;
    /// Memory size at which a function gets one full vCPU: Lambda allocates CPU in proportion
    /// to memory, so 128 MB gets 128/1769 of a vCPU (used by the CPU governor).
    pub const MEMORY_MB_PER_VCPU: u32 = 1_769;
}

/// How fast a function may add instances: a token bucket of `instances` tokens refilled
/// continuously over `per` (Lambda: 1,000 per 10 s per function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleRate {
    /// New instances allowed per interval; also the burst size.
    pub instances: u32,
    /// The refill interval.
    pub per: Duration,
}

impl Default for ScaleRate {
    fn default() -> Self {
        Self {
            instances: 1_000,
            per: Duration::from_secs(10),
        }
    }
}

/// What becomes of an async event that failed for good when no on-failure destination or
/// dead-letter target took it (none is configured, or each refused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnroutedFailures {
    /// Kept for the host (the default): `FunctionHandle::take_failed` takes them, shutdown and
    /// unregister hand back what is left. Once `max_kept_failures` are kept, `invoke_async`
    /// hands new events back (`RejectReason::KeptFailuresFull`); the events accepted before
    /// may still fail and be kept, so at most `max_kept_failures + queue_capacity` are. A warning
    /// is logged when a function keeps its first one.
    #[default]
    Keep,
    /// Logged at `warn` (request id, condition, error type and message), counted in
    /// `AsyncMetrics::discarded`, and dropped, as Lambda does.
    Discard,
}

/// How asynchronous invocations of a function are queued and retried.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AsyncConfig {
    /// Events accepted and not yet finished, at most (1..=10,000,000, default 100,000);
    /// `invoke_async` beyond it hands the event back.
    pub queue_capacity: usize,
    /// Retries after a function error, timeout, panic or init failure (0..=2, default 2).
    pub max_retries: u32,
    /// An event older than this goes to the failure path (60 s..=6 h, default 6 h).
    pub max_event_age: Duration,
    /// Waits between attempts (default: 1 min then 2 min, up to 20 % shorter).
    pub retry_backoff: Backoff,
    /// Waits after a throttle, which never counts as an attempt (default: 1 s doubling to
    /// 5 min, up to 20 % shorter). A freed permit wakes the queue sooner.
    pub throttle_backoff: Backoff,
    /// How long one call into a destination or dead-letter target may take before it counts
    /// as refused (1 ms..=15 min, default 30 s): a target that never answers must not hold a
    /// worker, and the concurrency it took, forever.
    pub delivery_timeout: Duration,
    /// What becomes of a failed event no target took (default: kept for the host).
    pub unrouted_failures: UnroutedFailures,
    /// Failed events kept for the host, at most (1..=10,000,000, default 10,000); they do not
    /// count against `queue_capacity`.
    pub max_kept_failures: usize,
}

impl Default for AsyncConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 100_000,
            max_retries: 2,
            max_event_age: Duration::from_secs(6 * 3_600),
            retry_backoff: Backoff::async_retries(),
            throttle_backoff: Backoff::throttles(),
            delivery_timeout: Duration::from_secs(30),
            unrouted_failures: UnroutedFailures::Keep,
            max_kept_failures: 10_000,
        }
    }
}

impl AsyncConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000_000).contains(&self.queue_capacity) {
            return Err(ConfigError::new(
                "function",
                "async_queue_capacity",
                self.queue_capacity,
                "1..=10000000",
            ));
        }
        if !(1..=10_000_000).contains(&self.max_kept_failures) {
            return Err(ConfigError::new(
                "function",
                "max_kept_failures",
                self.max_kept_failures,
                "1..=10000000",
            ));
        }
        if self.max_retries > 2 {
            return Err(ConfigError::new(
                "function",
                "max_retries",
                self.max_retries,
                "0..=2",
            ));
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(6 * 3_600)).contains(&self.max_event_age)
        {
            return Err(ConfigError::new(
                "function",
                "max_event_age",
                self.max_event_age,
                "60s..=6h",
            ));
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(900)).contains(&self.delivery_timeout) {
            return Err(ConfigError::new(
                "function",
                "delivery_timeout",
                self.delivery_timeout,
                "1ms..=15min",
            ));
        }
        // Every constructor of `Backoff` validates; checked again so that no value that
        // passes here can fail at run time.
        self.retry_backoff.validate().map_err(|e| ConfigError {
            scope: "function",
            field: "retry_backoff",
            allowed: format!("{} = {} within {}", e.field, e.value, e.allowed),
            value: format!("{:?}", self.retry_backoff),
        })?;
        self.throttle_backoff.validate().map_err(|e| ConfigError {
            scope: "function",
            field: "throttle_backoff",
            allowed: format!("{} = {} within {}", e.field, e.value, e.allowed),
            value: format!("{:?}", self.throttle_backoff),
        })?;
        Ok(())
    }
}

/// Billing granularity of the duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BillingGranularity {
    /// Round up to the next millisecond (Lambda since 2020).
    #[default]
    Millisecond,
    /// Round up to the next 100 ms (Lambda before 2020).
    HundredMilliseconds,
}

impl BillingGranularity {
    /// The rounding unit.
    pub fn unit(self) -> Duration {
        match self {
            Self::Millisecond => Duration::from_millis(1),
            Self::HundredMilliseconds => Duration::from_millis(100),
        }
    }
}

/// A function's configuration. Build it with the `with_*` setters; it is validated when the
/// function is registered, and every error names the field and the allowed range.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_core::FunctionConfig;
///
/// let config = FunctionConfig::default()
///     .with_timeout(Duration::from_secs(10))
///     .with_memory_mb(512)
///     .with_max_concurrency(20);
/// assert!(config.validate().is_ok());
///
/// let err = FunctionConfig::default().with_memory_mb(64).validate().unwrap_err();
/// assert_eq!(err.field, "memory_mb");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FunctionConfig {
    /// Longest an invocation may run (1 ms..=900 s, default 3 s). Lambda takes whole seconds
    /// from 1 s; nimbus any duration from 1 ms (sub-second timeouts for in-process handlers
    /// and tests).
    pub timeout: Duration,
    /// Memory size in MB (128..=10,240, default 128); used by metering.
    pub memory_mb: u32,
    /// Reserved concurrency: the hard cap of concurrent invocations, carved out of the runtime's
    /// limit. `None` (the default) shares the runtime's unreserved pool; `Some(0)` throttles
    /// every invocation.
    pub max_concurrency: Option<u32>,
    /// Provisioned concurrency: instances initialised at registration and never reaped, and
    /// as many permits set aside for them (default 0). Within `max_concurrency` when that is
    /// set; otherwise carved out of the runtime's limit as a reservation is (validated against
    /// `min_unreserved`), with invocations beyond it served on demand from the unreserved pool.
    pub min_instances: u32,
    /// How long an idle instance is kept warm before it is reaped (1 ms..=24 h, default 5 min).
    pub idle_timeout: Duration,
    /// How fast new instances may be created (instances 1..=100,000 per 1 ms..=1 h).
    pub scale_rate: ScaleRate,
    /// Longest init phase (1 ms..=10 s, default 10 s).
    pub init_timeout: Duration,
    /// Billing granularity (default 1 ms).
    pub billing: BillingGranularity,
    /// Asynchronous invocation: queue, retries, event age.
    pub async_invoke: AsyncConfig,
    /// What happens when an invocation's work has passed through
    /// [`hops::LIMIT`](crate::handler::hops::LIMIT) invocations: stopped (the default, as
    /// Lambda) or run anyway.
    pub recursive_loop: RecursiveLoop,
    /// The CPU-share governor for in-process handlers (default off). When on, an invocation
    /// is held back so that its handler uses at most [`cpu_share`](Self::cpu_share) of one
    /// vCPU: `memory_mb / 1769`, capped at 1.0, as Lambda allocates CPU in proportion to
    /// memory. It is an approximation: it sees only the CPU time of the handler's own polls
    /// (not `spawn_blocking` or other threads), may overshoot by one poll, delays a handler
    /// that never yields only by holding its result, and costs two thread-clock reads per poll
    /// (~2 µs on the VMs measured). Off, it costs nothing. The executor module's docs explain
    /// it (section "The CPU-share governor").
    pub cpu_governor: bool,
    /// The execution role it is registered with: what the function's own code may reach
    /// through its [`Context`](crate::Context) — other functions, the sources its mappings
    /// read, its destinations. `None` (the default): unrestricted, unless the runtime requires
    /// roles. This field keeps the value given at registration; the role as it stands is
    /// [`Runtime::function_role`](crate::Runtime::function_role) (see `Runtime::set_role`).
    pub role: Option<ExecutionRole>,
    /// The function policy it is registered with (who may invoke it). This field keeps the
    /// value given at registration; the policy as it stands is
    /// [`Runtime::get_policy`](crate::Runtime::get_policy) (see `Runtime::add_permission`).
    pub policy: Vec<Statement>,
}

impl Default for FunctionConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3),
            memory_mb: 128,
            max_concurrency: None,
            min_instances: 0,
            idle_timeout: Duration::from_secs(300),
            scale_rate: ScaleRate::default(),
            init_timeout: limits::MAX_INIT_TIMEOUT,
            billing: BillingGranularity::default(),
            async_invoke: AsyncConfig::default(),
            recursive_loop: RecursiveLoop::default(),
            cpu_governor: false,
            role: None,
            policy: Vec::new(),
        }
    }
}

impl FunctionConfig {
    /// The concurrency the function takes out of the runtime's unreserved pool: its
    /// reservation (`max_concurrency`), or else its provisioned floor (`min_instances`).
    pub fn reserved_concurrency(&self) -> Option<u32> {
        self.max_concurrency
            .or((self.min_instances > 0).then_some(self.min_instances))
    }

    /// The share of one vCPU the function is given: `memory_mb / 1769`, capped at 1.0 (a
    /// handler runs on one thread at a time). Enforced only with
    /// [`cpu_governor`](Self::cpu_governor).
    ///
    /// ```
    /// use nimbus_core::FunctionConfig;
    ///
    /// assert_eq!(FunctionConfig::default().with_memory_mb(442).cpu_share(), 442.0 / 1769.0);
    /// assert_eq!(FunctionConfig::default().with_memory_mb(4096).cpu_share(), 1.0);
    /// ```
    pub fn cpu_share(&self) -> f64 {
        (f64::from(self.memory_mb) / f64::from(limits::MEMORY_MB_PER_VCPU)).min(1.0)
    }

    /// Turns the CPU-share governor on or off (see [`cpu_governor`](Self::cpu_governor)).
    #[must_use]
    pub fn with_cpu_governor(mut self, on: bool) -> Self {
        self.cpu_governor = on;
        self
    }

    /// Sets the execution role (see [`role`](Self::role)).
    #[must_use]
    pub fn with_role(mut self, role: ExecutionRole) -> Self {
        self.role = Some(role);
        self
    }

    /// Adds a statement to the policy the function is registered with.
    #[must_use]
    pub fn with_policy_statement(mut self, statement: Statement) -> Self {
        self.policy.push(statement);
        self
    }

    /// Sets what happens to a recursive loop (Lambda's `PutFunctionRecursionConfig`).
    #[must_use]
    pub fn with_recursive_loop(mut self, setting: RecursiveLoop) -> Self {
        self.recursive_loop = setting;
        self
    }

    /// Sets the invocation timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the memory size in MB.
    #[must_use]
    pub fn with_memory_mb(mut self, memory_mb: u32) -> Self {
        self.memory_mb = memory_mb;
        self
    }

    /// Reserves concurrency for the function and caps it there.
    #[must_use]
    pub fn with_max_concurrency(mut self, max: u32) -> Self {
        self.max_concurrency = Some(max);
        self
    }

    /// Keeps this many instances initialised ahead of load.
    #[must_use]
    pub fn with_min_instances(mut self, min: u32) -> Self {
        self.min_instances = min;
        self
    }

    /// Sets how long idle instances stay warm.
    #[must_use]
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets the scale rate: `instances` new instances per `per`.
    #[must_use]
    pub fn with_scale_rate(mut self, instances: u32, per: Duration) -> Self {
        self.scale_rate = ScaleRate { instances, per };
        self
    }

    /// Sets the init timeout.
    #[must_use]
    pub fn with_init_timeout(mut self, init_timeout: Duration) -> Self {
        self.init_timeout = init_timeout;
        self
    }

    /// Sets the billing granularity.
    #[must_use]
    pub fn with_billing(mut self, billing: BillingGranularity) -> Self {
        self.billing = billing;
        self
    }

    /// Sets the number of retries of a failed async invocation (0..=2).
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.async_invoke.max_retries = max_retries;
        self
    }

    /// Sets the maximum age of an async event (60 s..=6 h).
    #[must_use]
    pub fn with_max_event_age(mut self, max_event_age: Duration) -> Self {
        self.async_invoke.max_event_age = max_event_age;
        self
    }

    /// Sets how many async events may be pending at once.
    #[must_use]
    pub fn with_async_queue_capacity(mut self, capacity: usize) -> Self {
        self.async_invoke.queue_capacity = capacity;
        self
    }

    /// Sets the waits between async attempts.
    #[must_use]
    pub fn with_retry_backoff(mut self, backoff: Backoff) -> Self {
        self.async_invoke.retry_backoff = backoff;
        self
    }

    /// Sets the waits after a throttle.
    #[must_use]
    pub fn with_throttle_backoff(mut self, backoff: Backoff) -> Self {
        self.async_invoke.throttle_backoff = backoff;
        self
    }

    /// Sets how long a destination or dead-letter target may take to answer (1 ms..=15 min).
    #[must_use]
    pub fn with_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.async_invoke.delivery_timeout = timeout;
        self
    }

    /// Sets what becomes of a failed async event no destination or dead-letter target took.
    #[must_use]
    pub fn with_unrouted_failures(mut self, unrouted: UnroutedFailures) -> Self {
        self.async_invoke.unrouted_failures = unrouted;
        self
    }

    /// Sets how many failed async events are kept for the host at most (1..=10,000,000).
    #[must_use]
    pub fn with_max_kept_failures(mut self, max: usize) -> Self {
        self.async_invoke.max_kept_failures = max;
        self
    }

    /// Checks every field against its allowed range.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::permission::validate_function_policy(&self.policy)?;
        let err = |field, value: &dyn std::fmt::Debug, allowed: &str| {
            Err(ConfigError::new("function", field, value, allowed))
        };
        if !(limits::MIN_TIMEOUT..=limits::MAX_TIMEOUT).contains(&self.timeout) {
            return err("timeout", &self.timeout, "1ms..=900s");
        }
        if !(limits::MIN_MEMORY_MB..=limits::MAX_MEMORY_MB).contains(&self.memory_mb) {
            return err("memory_mb", &self.memory_mb, "128..=10240");
        }
        if let Some(max) = self.max_concurrency {
            if self.min_instances > max {
                return err(
                    "min_instances",
                    &self.min_instances,
                    &format!("0..=max_concurrency ({max})"),
                );
            }
        } else if self.min_instances > limits::MAX_MIN_INSTANCES {
            // The runtime checks it against its own concurrency limit at registration.
            return err(
                "min_instances",
                &self.min_instances,
                "0..=1000000 (and at most the runtime's concurrency_limit)",
            );
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(86_400)).contains(&self.idle_timeout) {
            return err("idle_timeout", &self.idle_timeout, "1ms..=24h");
        }
        if !(1..=100_000).contains(&self.scale_rate.instances) {
            return err(
                "scale_rate.instances",
                &self.scale_rate.instances,
                "1..=100000",
            );
        }
        if !(Duration::from_millis(1)..=Duration::from_secs(3_600)).contains(&self.scale_rate.per) {
            return err("scale_rate.per", &self.scale_rate.per, "1ms..=1h");
        }
        if !(limits::MIN_TIMEOUT..=limits::MAX_INIT_TIMEOUT).contains(&self.init_timeout) {
            return err("init_timeout", &self.init_timeout, "1ms..=10s");
        }
        self.async_invoke.validate()
    }
}
