//! Leasing an instance for an invocation: a warm one (most recently used first, per thread) once its
//! backend says it can take an event, or a new one if the scale rate allows, through the init
//! phase (under the init timeout, with panics caught).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Executor;
use crate::error::{InitFailure, InvokeError, ThrottleReason};
use crate::handler::{InitContext, InstanceScope};
use crate::instance::{Instance, Lease};
use crate::util::{panic_message, BoxFuture, CatchUnwind};

impl<E: Send + 'static, O: Send + 'static> Executor<E, O> {
    /// A warm instance, or a new one if the scale rate allows (with its init duration).
    /// Throttles and init failures are counted here.
    pub(crate) async fn lease_instance(
        &self,
    ) -> Result<(Lease<'_, E, O>, Option<Duration>), InvokeError> {
        while let Some(mut lease) = self.pool.take_warm() {
            if self.wait_ready(&mut lease).await {
                return Ok((lease, None));
            }
            // Died before it could take the event: dropping the lease discards it.
        }
        if !self.scale.try_take() {
            self.counters.throttled(ThrottleReason::ScaleRate);
            return Err(InvokeError::Throttled(ThrottleReason::ScaleRate));
        }
        // A cold start replaces a provisioned instance that was lost (timed out, crashed).
        let provisioned = self
            .pool
            .claim_provisioned(self.config.min_instances as usize);
        let outcome = self.init_instance(provisioned).await;
        if outcome.is_err() && provisioned {
            self.pool.unclaim_provisioned();
        }
        match outcome {
            Ok((instance, scope, took)) => {
                self.counters.cold_start();
                Ok((self.pool.lease_new(instance, scope), Some(took)))
            }
            Err(error) => {
                if matches!(error, InvokeError::Init(_)) {
                    self.counters.init_failed();
                }
                Err(error)
            }
        }
    }

    /// Whether a warm instance can take an event, waiting (up to the function's timeout) for one
    /// whose backend says it is not ready yet; a panic in the backend's answer is a `false`.
    async fn wait_ready(&self, lease: &mut Lease<'_, E, O>) -> bool {
        match readiness(lease) {
            Readiness::Now => true,
            Readiness::Dead => false,
            Readiness::Wait(wait) => self.wait_until_ready(wait).await,
        }
    }

    /// Waits (up to the function's timeout) for an instance's [`Readiness::Wait`]: true when
    /// the instance can take an event, false when it died, panicked or took too long.
    pub(crate) async fn wait_until_ready(&self, wait: BoxFuture<'_, bool>) -> bool {
        matches!(
            tokio::time::timeout(self.config.timeout, CatchUnwind(wait)).await,
            Ok(Ok(true))
        )
    }

    /// The init phase of one instance, under the init timeout, with panics caught.
    pub(crate) async fn init_instance(
        &self,
        provisioned: bool,
    ) -> Result<(Box<dyn Instance<E, O>>, Arc<InstanceScope>, Duration), InvokeError> {
        let scope = Arc::new(InstanceScope::new(Arc::clone(&self.scope), provisioned));
        let ctx = InitContext::new(
            Arc::clone(&scope),
            self.instance_seq.fetch_add(1, Ordering::Relaxed),
            provisioned,
        );
        let start = Instant::now();
        // The backend is user code from its first instruction: a panic before it returns its
        // future is an init failure too.
        let init = match catch_unwind(AssertUnwindSafe(|| self.backend.create(ctx))) {
            Ok(init) => init,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                return Err(InvokeError::Init(InitFailure::Panic(message)));
            }
        };
        let init = tokio::time::timeout(self.config.init_timeout, CatchUnwind(init));
        let outcome = tokio::select! {
            biased;
            outcome = init => outcome,
            () = self.hard_stop.cancelled() => {
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
                return Err(InvokeError::Cancelled);
            }
        };
        let took = start.elapsed();
        // A provisioned instance's init is paid for by the provisioned capacity, as Lambda's is.
        if !provisioned {
            self.counters.init_time(took);
        }
        match outcome {
            Ok(Ok(Ok(instance))) => Ok((instance, scope, took)),
            Ok(Ok(Err(error))) => Err(InvokeError::Init(InitFailure::Error {
                error_type: error.error_type().to_owned(),
                message: error.message().to_owned(),
            })),
            Ok(Err(message)) => Err(InvokeError::Init(InitFailure::Panic(message))),
            Err(_elapsed) => Err(InvokeError::Init(InitFailure::Timeout(
                self.config.init_timeout,
            ))),
        }
    }
}

/// Whether a leased warm instance can take an event: its backend's answer (`Instance::ready`).
pub(crate) enum Readiness<'a> {
    /// At once (the default, and in-process handlers).
    Now,
    /// Once this resolves `true` (see [`Executor::wait_until_ready`]).
    Wait(BoxFuture<'a, bool>),
    /// Never: the backend panicked when asked, and the instance is to be discarded.
    Dead,
}

/// Asks the backend whether a leased warm instance can take an event (user code: a panic is
/// [`Readiness::Dead`]).
pub(crate) fn readiness<'a, E, O>(lease: &'a mut Lease<'_, E, O>) -> Readiness<'a> {
    let (instance, _) = lease.parts();
    // Moved in, so that the closure is `FnOnce` and the future may borrow the instance.
    let ready = move || {
        let instance = instance;
        instance.ready()
    };
    match catch_unwind(AssertUnwindSafe(ready)) {
        Ok(None) => Readiness::Now,
        Ok(Some(wait)) => Readiness::Wait(wait),
        Err(_) => Readiness::Dead,
    }
}
