//! The backend contract: [`Backend`] creates instances, [`Instance`] runs invocations on one,
//! reports a [`Fault`] when it died, and is disposed of. [`InProcess`] is the backend of
//! handlers running on the caller's task.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{FunctionError, InvokeError};
use crate::handler::{Context, Handler, InitContext, InstanceFactory};
use crate::metering::UsageReport;
use crate::util::BoxFuture;

/// How an instance died, as its backend learnt it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The code on the instance panicked (an invocation answers [`crate::InvokeError::Panic`]).
    Panicked(String),
    /// The instance is gone: its process exited, its task ended, its connection dropped (an
    /// invocation answers [`crate::InvokeError::Crashed`]).
    Exited(String),
    /// The instance was killed at its memory limit (an invocation answers
    /// [`crate::InvokeError::OutOfMemory`]).
    OutOfMemory(String),
}

/// One instance of a function: Lambda's execution environment. It serves one invocation at a
/// time (`&mut self`), and the executor never calls it again once it timed out, panicked or
/// reported a [`Fault`].
///
/// # Example
///
/// An instance that runs each invocation on a task of its own, behind a channel: the shape of
/// an instance in another thread or process.
///
/// ```
/// use nimbus_core::instance::{Fault, Instance};
/// use nimbus_core::util::BoxFuture;
/// use nimbus_core::{Context, FunctionError};
/// use tokio::sync::{mpsc, oneshot};
///
/// struct Doubler {
///     calls: mpsc::Sender<(u64, oneshot::Sender<u64>)>,
/// }
///
/// impl Instance<u64, u64> for Doubler {
///     fn invoke(&mut self, event: u64, _ctx: Context) -> BoxFuture<'_, Result<u64, FunctionError>> {
///         Box::pin(async move {
///             let (reply, answer) = oneshot::channel();
///             self.calls.send((event, reply)).await.map_err(|_| FunctionError::msg("gone"))?;
///             answer.await.map_err(|_| FunctionError::msg("gone"))
///         })
///     }
///
///     fn fault(&mut self) -> Option<Fault> {
///         self.calls.is_closed().then(|| Fault::Exited("the worker task ended".into()))
///     }
/// }
/// # let _ = std::marker::PhantomData::<Doubler>;
/// ```
pub trait Instance<E, O>: Send {
    /// Runs one invocation. An `Err` is a function error, unless [`Instance::fault`] then
    /// reports that the instance died.
    fn invoke(&mut self, event: E, ctx: Context) -> BoxFuture<'_, Result<O, FunctionError>>;

    /// Whether the instance died, and how. Asked after an invocation that failed and before
    /// a warm instance is reused; a faulted instance is discarded. The default: never.
    fn fault(&mut self) -> Option<Fault> {
        None
    }

    /// Waits until the instance can take an event, for a warm instance about to be reused:
    /// `None` when it can at once (the default, and the case of in-process handlers), else a
    /// future that resolves `true` when it can or `false` if it died meanwhile (the executor
    /// then discards it and takes another). A process instance uses it to hand an event only to
    /// a runtime waiting in `/next`, as Lambda does. The wait is bounded by the function's
    /// timeout and is not part of the invocation's duration.
    fn ready(&mut self) -> Option<BoxFuture<'_, bool>> {
        None
    }

    /// Told how an invocation ended, once the executor has settled it: its usage report (the
    /// executor's measurement, the one that is billed) and its error, if it failed. Called after
    /// every invocation that ran on the instance, before the instance is reused or disposed of,
    /// so that a backend can complete the report with what only it knows (the memory the
    /// invocation used) and close the invocation's log (Lambda's `END` and `REPORT` lines).
    /// The default does nothing.
    fn finished(&mut self, report: &mut UsageReport, error: Option<&InvokeError>) {
        let _ = (report, error);
    }

    /// Disposes of the instance (reaped, discarded, or at shutdown); its context's
    /// cancellation token has fired by then. The future is polled once at once and, if not
    /// done, run on a task the runtime waits for at shutdown (within the shutdown's bound),
    /// given up after [`DISPOSE_LIMIT`]. The default drops the instance.
    fn dispose(self: Box<Self>) -> BoxFuture<'static, ()> {
        drop(self);
        Box::pin(async {})
    }
}

/// How long a disposal may take ([`Instance::dispose`]) before it is given up: Lambda's
/// shutdown phase for a runtime with extensions.
pub const DISPOSE_LIMIT: Duration = Duration::from_secs(2);

/// Creates a function's instances: the init phase.
///
/// The executor calls it for every cold start and for each provisioned instance, under the
/// function's init timeout, with panics caught; an error, a panic or the timeout is an init
/// failure.
///
/// # Example
///
/// ```
/// use nimbus_core::async_trait;
/// use nimbus_core::instance::{Backend, Instance};
/// use nimbus_core::util::BoxFuture;
/// use nimbus_core::{Context, Function, FunctionError, InitContext};
///
/// struct Constant(u64);
///
/// impl Instance<(), u64> for Constant {
///     fn invoke(&mut self, _event: (), _ctx: Context) -> BoxFuture<'_, Result<u64, FunctionError>> {
///         let value = self.0;
///         Box::pin(async move { Ok(value) })
///     }
/// }
///
/// struct Constants;
///
/// #[async_trait]
/// impl Backend<(), u64> for Constants {
///     async fn create(&self, ctx: InitContext) -> Result<Box<dyn Instance<(), u64>>, FunctionError> {
///         Ok(Box::new(Constant(ctx.instance_number())))
///     }
/// }
///
/// let function = Function::with_backend("constants", Constants);
/// # let _ = function;
/// ```
#[async_trait]
pub trait Backend<E, O>: Send + Sync + 'static {
    /// Creates a new instance.
    async fn create(&self, ctx: InitContext) -> Result<Box<dyn Instance<E, O>>, FunctionError>;
}

/// The in-process backend: instances are handlers built by an [`InstanceFactory`], run on the
/// caller's task.
pub(crate) struct InProcess<E, O>(pub(crate) Arc<dyn InstanceFactory<E, O>>);

/// A handler as an instance.
struct HandlerInstance<E, O>(Box<dyn Handler<E, O>>);

impl<E: Send + 'static, O: 'static> Instance<E, O> for HandlerInstance<E, O> {
    fn invoke(&mut self, event: E, ctx: Context) -> BoxFuture<'_, Result<O, FunctionError>> {
        // The handler's own future, through its vtable: not the `Box<dyn Handler>` impl, which
        // would box that future once more.
        let handler: &mut dyn Handler<E, O> = &mut *self.0;
        handler.call(event, ctx)
    }
}

#[async_trait]
impl<E: Send + 'static, O: 'static> Backend<E, O> for InProcess<E, O> {
    async fn create(&self, ctx: InitContext) -> Result<Box<dyn Instance<E, O>>, FunctionError> {
        let handler = self.0.init(ctx).await?;
        Ok(Box::new(HandlerInstance(handler)))
    }
}
