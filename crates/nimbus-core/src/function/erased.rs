//! The registry's view of a function, whatever its event and output types: [`AnyFunction`]
//! for [`FunctionInner`], with the steps of unregister.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{FunctionInner, InvokeOptions};
use crate::async_invoke::{AsyncMetrics, HandedBack};
use crate::error::InvokeError;
use crate::handler::{Invoker, RequestId};
use crate::metering::Usage;
use crate::metrics::FunctionMetrics;
use crate::runtime::{AnyFunction, BoxFuture};

impl<E: Send + 'static, O: Send + 'static> AnyFunction for FunctionInner<E, O> {
    fn invoke_json(
        &self,
        event: serde_json::Value,
        invoker: Invoker,
    ) -> BoxFuture<'_, Result<serde_json::Value, InvokeError>> {
        Box::pin(async move {
            let Some(codec) = &self.json else {
                return Err(InvokeError::NotJson(self.name.to_string()));
            };
            let event = (codec.decode)(&event).map_err(|e| {
                InvokeError::Payload(format!("cannot decode the event for `{}`: {e}", self.name))
            })?;
            let output = self
                .invoke(event, InvokeOptions::default().with_invoker(invoker))
                .await
                .result?;
            (codec.encode)(output).map_err(|e| {
                InvokeError::Payload(format!("cannot encode the output of `{}`: {e}", self.name))
            })
        })
    }

    fn metrics(&self) -> FunctionMetrics {
        self.counters.snapshot(self.pool.live(), self.pool.idle())
    }

    fn async_metrics(&self) -> AsyncMetrics {
        self.async_state.metrics()
    }

    fn usage(&self) -> Usage {
        self.counters
            .usage(self.config.memory_mb, &self.shared.config.prices)
    }

    fn stop(&self) -> usize {
        self.stopped.cancel();
        self.pool.close()
    }

    fn close(&self) -> usize {
        self.lifecycle.closed.store(true, Ordering::Release);
        let in_flight = self.counters.busy_flag(crate::metrics::CLOSED);
        self.stopped.cancel();
        in_flight
    }

    fn drained(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.until_not_busy().await;
            self.async_state.until_idle().await;
        })
    }

    fn halt(&self) {
        self.lifecycle.halted.store(true, Ordering::Release);
        if self.counters.busy_flag(crate::metrics::RETIRED) == 0 {
            self.return_reservation();
        }
        self.hard_stop.cancel();
    }

    fn quiesced(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.until_not_busy().await;
            self.tasks.close();
            self.tasks.wait().await;
        })
    }

    fn cancelled(&self) -> u64 {
        self.counters.snapshot(0, 0).cancelled
    }

    fn reservation_returned(&self) -> bool {
        self.config.max_concurrency.is_none() || self.reservation_returned.load(Ordering::Acquire)
    }

    fn invoke_async_json(
        self: Arc<Self>,
        event: serde_json::Value,
    ) -> Result<RequestId, crate::runtime::AsyncInvokeError> {
        use crate::runtime::AsyncInvokeError;
        let Some(codec) = &self.json else {
            return Err(AsyncInvokeError::NotJson(self.name.to_string()));
        };
        let decoded = (codec.decode)(&event).map_err(|e| {
            AsyncInvokeError::Payload(format!("cannot decode the event for `{}`: {e}", self.name))
        })?;
        (codec.invoke_async)(&self, decoded).map_err(|rejected| AsyncInvokeError::Rejected {
            event,
            reason: rejected.reason,
        })
    }

    fn async_idle(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.async_state.until_idle())
    }

    fn hand_back(&self) -> Vec<HandedBack> {
        self.async_state.hand_back(&self.name)
    }
}
