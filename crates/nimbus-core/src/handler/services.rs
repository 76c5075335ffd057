//! [`RuntimeServices`]: what a handler may ask of the runtime it runs in, through its
//! [`Context`](super::Context). Defined here, below the runtime in the module order, so that
//! the context never imports the runtime; the runtime implements it.

use std::any::Any;
use std::sync::Arc;

use super::{AwsCredentials, CallOrigin, RequestId};
use crate::error::{AsyncCallError, CallError};
use crate::util::BoxFuture;

/// The runtime's side of a [`Context`](super::Context): invoke other functions, reach
/// resources the host registered. Every call names its `origin`: the principal the runtime set
/// for the invocation asking and the hop count of the invocation asked for (one more than the
/// asker's); this is where permission checks and loop detection plug in.
///
/// [`Runtime`](crate::Runtime) implements it; hosts and tests rarely need to.
///
/// # Example
///
/// A stand-in that knows one function, for testing a handler outside a runtime:
///
/// ```
/// use std::any::Any;
/// use std::sync::Arc;
/// use nimbus_core::error::{AsyncCallError, CallError, LookupError};
/// use nimbus_core::handler::{CallOrigin, RequestId, RuntimeServices};
/// use nimbus_core::util::BoxFuture;
///
/// struct Echo;
///
/// impl RuntimeServices for Echo {
///     fn invoke_json(
///         &self,
///         _origin: CallOrigin<'_>,
///         function: &str,
///         event: serde_json::Value,
///     ) -> BoxFuture<'_, Result<serde_json::Value, CallError>> {
///         let found = function == "echo";
///         let name = function.to_owned();
///         Box::pin(async move {
///             if found { Ok(event) } else { Err(LookupError::NotFound(name).into()) }
///         })
///     }
///
///     fn invoke_async_json(
///         &self,
///         _origin: CallOrigin<'_>,
///         function: &str,
///         _event: serde_json::Value,
///     ) -> Result<RequestId, AsyncCallError<serde_json::Value>> {
///         Err(LookupError::NotFound(function.to_owned()).into())
///     }
///
///     fn resource(&self, _origin: CallOrigin<'_>, _name: &str) -> Option<Arc<dyn Any + Send + Sync>> {
///         None
///     }
/// }
/// # let _ = Echo;
/// ```
pub trait RuntimeServices: Send + Sync + 'static {
    /// Invokes `function` synchronously with a JSON event on behalf of `origin`.
    fn invoke_json(
        &self,
        origin: CallOrigin<'_>,
        function: &str,
        event: serde_json::Value,
    ) -> BoxFuture<'_, Result<serde_json::Value, CallError>>;

    /// Queues a JSON event for asynchronous invocation of `function` on behalf of `origin`.
    ///
    /// # Errors
    ///
    /// See [`AsyncCallError`]; a refused event is handed back.
    fn invoke_async_json(
        &self,
        origin: CallOrigin<'_>,
        function: &str,
        event: serde_json::Value,
    ) -> Result<RequestId, AsyncCallError<serde_json::Value>>;

    /// The resource the host registered under `name`, if any.
    fn resource(&self, origin: CallOrigin<'_>, name: &str) -> Option<Arc<dyn Any + Send + Sync>>;

    /// The credentials `origin`'s code signs AWS SDK calls with: the runtime maps them back
    /// to the principal, so that such calls are checked by its role. `None` by default.
    fn credentials(&self, origin: CallOrigin<'_>) -> Option<AwsCredentials> {
        let _ = origin;
        None
    }

    /// The URL of the runtime's Lambda Invoke API, if one is served
    /// (`AWS_ENDPOINT_URL_LAMBDA` for code that calls through an AWS SDK). `None` by default.
    fn lambda_endpoint(&self) -> Option<String> {
        None
    }
}
