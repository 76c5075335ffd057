//! The registry's view of a function, whatever its event and output types: [`AnyFunction`],
//! implemented by [`FunctionInner`], with the steps of unregister and shutdown.

use std::sync::Arc;

use super::FunctionInner;
use crate::async_invoke::{AsyncMetrics, HandedBack};
use crate::config::FunctionConfig;
use crate::error::{
    AccessDenied, AsyncCallError, CallError, InvokeError, LookupError, RejectReason,
};
use crate::executor::InvokeOptions;
use crate::handler::{Caller, Principal, RequestId};
use crate::metering::{Usage, UsageReport};
use crate::metrics::{DurationHistogram, FunctionMetrics};
use crate::permission::{ExecutionRole, FunctionAccess};
use crate::util::{json_exceeds, BoxFuture};

/// A synchronous invocation by name with a JSON event: the output or why there is none, and
/// what the invocation used (`None` when no handler ran: not found, refused, throttled).
#[derive(Debug)]
#[non_exhaustive]
pub struct JsonInvocation {
    /// The output, or how the call failed.
    pub result: Result<serde_json::Value, CallError>,
    /// What the invocation used, with its request id.
    pub report: Option<UsageReport>,
}

/// What every registered function offers, whatever its event and output types.
pub(crate) trait AnyFunction: Send + Sync + 'static {
    /// Invokes with a JSON event as `principal`, with `options`.
    fn invoke_json(
        &self,
        event: serde_json::Value,
        principal: Caller,
        options: InvokeOptions,
    ) -> BoxFuture<'_, JsonInvocation>;
    /// The function's configuration.
    fn config(&self) -> &FunctionConfig;
    /// The function's unqualified ARN.
    fn arn(&self) -> &str;
    /// The function's policy and role.
    fn access(&self) -> &Arc<FunctionAccess>;
    /// The refusal of a function principal whose role cannot be checked (see
    /// `Executor::unvouched`).
    fn unvouched(&self, principal: &Principal) -> Result<(), AccessDenied>;
    /// Whether `principal` may invoke the function (for another function, with its role).
    fn authorize(
        &self,
        principal: &Principal,
        caller_role: Option<&ExecutionRole>,
    ) -> Result<(), AccessDenied>;
    /// Queues a JSON event as `principal`.
    fn invoke_async_json(
        &self,
        event: serde_json::Value,
        principal: Caller,
    ) -> Result<RequestId, AsyncCallError<serde_json::Value>>;
    fn metrics(&self) -> FunctionMetrics;
    fn async_metrics(&self) -> AsyncMetrics;
    /// The durations of the function's invocations.
    fn durations(&self) -> DurationHistogram;
    fn usage(&self) -> Usage;
    /// Stops the reaper and disposes of idle instances (and any given back later); returns
    /// how many were disposed of now.
    fn stop(&self) -> usize;
    /// Unregister begins: refuse new invocations, tell running handlers. Returns how many
    /// invocations were in flight.
    fn close(&self) -> usize;
    /// Resolves when no invocation runs and no async event is pending.
    fn drained(&self) -> BoxFuture<'_, ()>;
    /// The unregister grace has ended: cancel what runs, stop the function's tasks; the
    /// reservation returns with the last permit.
    fn halt(&self);
    /// Resolves when nothing of the function runs any more.
    fn quiesced(&self) -> BoxFuture<'_, ()>;
    /// Invocations of the function cancelled so far.
    fn cancelled(&self) -> u64;
    /// Whether the function holds no reservation any more.
    fn reservation_returned(&self) -> bool;
    /// Resolves when no async event is pending.
    fn async_idle(&self) -> BoxFuture<'_, ()>;
    /// Takes every unfinished async event out, for the host.
    fn hand_back(&self) -> Vec<HandedBack>;
}

impl<E: Send + 'static, O: Send + 'static> AnyFunction for FunctionInner<E, O> {
    fn invoke_json(
        &self,
        event: serde_json::Value,
        principal: Caller,
        options: InvokeOptions,
    ) -> BoxFuture<'_, JsonInvocation> {
        Box::pin(async move {
            let name = self.exec.name();
            let refused = |error: CallError| JsonInvocation {
                result: Err(error),
                report: None,
            };
            // Before the payload is looked at: a caller who may not invoke learns nothing.
            if let Err(denied) = self.exec.authorize(&principal) {
                return refused(InvokeError::AccessDenied(denied).into());
            }
            let Some(codec) = &self.json else {
                return refused(LookupError::NotJson(name.to_string()).into());
            };
            let limits = *self.exec.payload_limits();
            if let Some(size) = json_exceeds(&event, limits.sync_request) {
                return refused(CallError::PayloadTooLarge {
                    size,
                    limit: limits.sync_request,
                });
            }
            let event = match (codec.decode_owned)(event) {
                Ok(event) => event,
                Err(e) => {
                    let message = format!("cannot decode the event for `{name}`: {e}");
                    return refused(InvokeError::Payload(message).into());
                }
            };
            let invocation = self.exec.invoke(event, principal, options).await;
            let result = invocation
                .result
                .map_err(CallError::from)
                .and_then(|output| {
                    let output = (codec.encode)(output).map_err(|e| {
                        InvokeError::Payload(format!("cannot encode the output of `{name}`: {e}"))
                    })?;
                    if let Some(size) = json_exceeds(&output, limits.sync_response) {
                        return Err(InvokeError::ResponseTooLarge {
                            size,
                            limit: limits.sync_response,
                        }
                        .into());
                    }
                    Ok(output)
                });
            JsonInvocation {
                result,
                report: invocation.report,
            }
        })
    }

    fn config(&self) -> &FunctionConfig {
        self.exec.config()
    }

    fn arn(&self) -> &str {
        FunctionInner::arn(self)
    }

    fn access(&self) -> &Arc<FunctionAccess> {
        self.exec.access()
    }

    fn authorize(
        &self,
        principal: &Principal,
        caller_role: Option<&ExecutionRole>,
    ) -> Result<(), AccessDenied> {
        self.exec.authorize_call(principal, caller_role)
    }

    fn unvouched(&self, principal: &Principal) -> Result<(), AccessDenied> {
        self.exec.unvouched(principal)
    }

    fn invoke_async_json(
        &self,
        event: serde_json::Value,
        principal: Caller,
    ) -> Result<RequestId, AsyncCallError<serde_json::Value>> {
        let name = self.exec.name();
        if let Err(denied) = self.exec.authorize(&principal) {
            return Err(AsyncCallError::Rejected(crate::error::Rejected {
                event,
                reason: RejectReason::AccessDenied(denied),
            }));
        }
        let Some(codec) = &self.json else {
            return Err(LookupError::NotJson(name.to_string()).into());
        };
        let limit = self.exec.payload_limits().async_request;
        if let Some(size) = json_exceeds(&event, limit) {
            return Err(AsyncCallError::Rejected(crate::error::Rejected {
                event,
                reason: RejectReason::TooLarge { size, limit },
            }));
        }
        let decoded = (codec.decode)(&event).map_err(|e| {
            AsyncCallError::Payload(format!("cannot decode the event for `{name}`: {e}"))
        })?;
        (codec.invoke_async)(&self.queue, decoded, principal).map_err(|rejected| {
            AsyncCallError::Rejected(crate::error::Rejected {
                event,
                reason: rejected.reason,
            })
        })
    }

    fn metrics(&self) -> FunctionMetrics {
        self.exec.metrics()
    }

    fn async_metrics(&self) -> AsyncMetrics {
        self.queue.metrics()
    }

    fn durations(&self) -> DurationHistogram {
        self.exec.durations()
    }

    fn usage(&self) -> Usage {
        self.exec.usage()
    }

    fn stop(&self) -> usize {
        self.exec.stop_instances()
    }

    fn close(&self) -> usize {
        self.exec.close()
    }

    fn drained(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.exec.drained().await;
            self.queue.until_idle().await;
        })
    }

    fn halt(&self) {
        self.exec.halt();
    }

    fn quiesced(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.exec.quiesced())
    }

    fn cancelled(&self) -> u64 {
        self.exec.cancelled()
    }

    fn reservation_returned(&self) -> bool {
        self.exec.reservation_returned()
    }

    fn async_idle(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.queue.until_idle())
    }

    fn hand_back(&self) -> Vec<HandedBack> {
        self.queue.hand_back()
    }
}
