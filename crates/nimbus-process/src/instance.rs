//! A process instance: one child process running a Lambda runtime, its Runtime API endpoint and
//! its log. It serves one invocation at a time: the event goes to its own endpoint, and the
//! invocation ends with the runtime's answer or the process's exit.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use nimbus_core::instance::{Fault, Instance};
use nimbus_core::util::BoxFuture;
use nimbus_core::{ClientContext, Context, FunctionError, InvokeError, UsageReport};
use nix::sys::signal::Signal;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::api::wire::MAX_PAYLOAD;
use crate::api::{Answer, Delivery, Endpoint, NextEvent, Server};
use crate::child::{describe, ChildProcess};
use crate::limits::InstanceLimits;
use crate::logs::LogCapture;

/// The error type of an invocation whose runtime exited, as Lambda names it.
pub(crate) const EXIT_ERROR: &str = "Runtime.ExitError";

/// One running process instance.
pub(crate) struct ProcessInstance<E, O> {
    pub(crate) child: ChildProcess,
    /// Kept for its drop: the endpoint's port closes with the instance.
    pub(crate) server: Server,
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) events: mpsc::Sender<Delivery>,
    pub(crate) logs: LogCapture,
    pub(crate) shutdown_grace: Duration,
    /// An invocation was handed over and not answered: the process is busy (or stuck), so
    /// disposal kills it at once rather than asking it to stop.
    pub(crate) busy: bool,
    /// The last invocation got its answer: a process that exits afterwards (Python does, after
    /// its response was refused as too large) did not fail that invocation. Cleared when the
    /// invocation is settled ([`Instance::finished`]); a dead process is then found before reuse.
    pub(crate) answered: bool,
    /// The instance's CPU and memory limits (its cgroup, removed when the instance goes).
    pub(crate) limits: InstanceLimits,
    pub(crate) types: PhantomData<fn(E) -> O>,
}

impl<E, O> std::fmt::Debug for ProcessInstance<E, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessInstance")
            .field("pid", &self.child.pid())
            .field("addr", &self.server.addr())
            .field("busy", &self.busy)
            .finish_non_exhaustive()
    }
}

impl<E, O> Instance<E, O> for ProcessInstance<E, O>
where
    E: Serialize + Send + 'static,
    O: DeserializeOwned + Send + 'static,
{
    fn invoke(&mut self, event: E, ctx: Context) -> BoxFuture<'_, Result<O, FunctionError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&event).map_err(|e| {
                FunctionError::new(
                    "Runtime.InvalidEvent",
                    format!("the event cannot be serialised as JSON: {e}"),
                )
                .not_retryable()
            })?;
            if body.len() > MAX_PAYLOAD {
                return Err(FunctionError::new(
                    "RequestTooLargeException",
                    format!(
                        "Request payload size ({} bytes) exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes).",
                        body.len()
                    ),
                )
                .not_retryable());
            }
            let (answer, answered) = oneshot::channel();
            let delivery = delivery(&ctx, Bytes::from(body), answer);
            self.logs.start(ctx.request_id());
            self.busy = true;
            if self.events.send(delivery).await.is_err() {
                return Err(self.exit_error().await);
            }
            let answer = tokio::select! {
                biased;
                answer = answered => answer,
                _ = self.child.exited() => return Err(self.exit_error().await),
            };
            self.busy = false;
            self.answered = answer.is_ok();
            match answer {
                Ok(Answer::Response(body)) => decode(&body),
                Ok(Answer::Error(report)) => Err(report.into_error()),
                Ok(Answer::TooLarge(size)) => Err(too_large(size)),
                // The endpoint let go of the answer without one: only a second `/next` while
                // this invocation was unanswered does that, which no runtime should do.
                Err(_) => Err(FunctionError::new(
                    "Runtime.Unknown",
                    "the runtime asked for another event without answering this one",
                )),
            }
        })
    }

    fn ready(&mut self) -> Option<BoxFuture<'_, bool>> {
        // Only a runtime waiting in `/next` gets an event, as in Lambda: one that is still busy
        // with the last answer's 202, or is exiting, is waited for or found dead first.
        Some(Box::pin(async move {
            tokio::select! {
                biased;
                _ = self.child.exited() => false,
                () = self.endpoint.runtime_waiting() => true,
            }
        }))
    }

    fn fault(&mut self) -> Option<Fault> {
        if self.answered {
            return None;
        }
        let status = self.child.try_exited()?;
        // The group is the instance's own: any OOM kill in it is this instance's death.
        if self.limits.oom_kills() > 0 {
            return Some(Fault::OutOfMemory(format!(
                "Runtime exited with error: {} (killed at the memory limit)",
                describe(status)
            )));
        }
        Some(Fault::Exited(format!(
            "Runtime exited with error: {}",
            describe(status)
        )))
    }

    fn finished(&mut self, report: &mut UsageReport, error: Option<&InvokeError>) {
        self.answered = false;
        let alive = self.child.try_exited().is_none();
        report.max_memory_used_mb = self.limits.peak_mb(alive.then(|| self.child.pid()));
        self.logs
            .finish(report, error, self.limits.enforcement().cpu_capped());
    }

    fn dispose(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if self.busy {
                // Timed out or cancelled mid-invocation: Lambda resets such an environment.
                self.child.signal(Signal::SIGKILL);
            }
            let grace = if self.busy {
                Duration::ZERO
            } else {
                self.shutdown_grace
            };
            self.child.stop(grace).await;
            // Its subprocesses too (a shell's curl or sleep), so that the groups go at once.
            self.limits.empty().await;
        })
    }
}

impl<E, O> ProcessInstance<E, O> {
    /// The error of an invocation whose process exited before answering; the executor, told
    /// by [`Instance::fault`], reports it as a crash.
    async fn exit_error(&mut self) -> FunctionError {
        let status = self.child.exited().await;
        FunctionError::new(
            EXIT_ERROR,
            format!("Runtime exited with error: {}", describe(status)),
        )
    }
}

/// The event and what `/next` tells the runtime about it.
fn delivery(ctx: &Context, body: Bytes, answer: oneshot::Sender<Answer>) -> Delivery {
    let deadline = SystemTime::now() + ctx.remaining_time();
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let event = NextEvent {
        request_id: ctx.request_id().to_string(),
        deadline_ms,
        function_arn: ctx.invoked_function_arn().to_owned(),
        trace_id: ctx.xray_trace_id().into_owned(),
        client_context: ctx.client_context().map(client_context_json),
        identity: ctx.identity().and_then(|i| serde_json::to_string(i).ok()),
        body,
    };
    Delivery { event, answer }
}

/// The client context as the runtime clients read it: the mobile SDKs' JSON (`client` fields in
/// snake case, `custom`, `env`), which `awslambdaric` reads and Node.js passes through, plus
/// `environment`, the one key `lambda_runtime` spells differently (it takes the snake-case
/// `client` fields as aliases).
fn client_context_json(context: &ClientContext) -> String {
    let app = &context.client;
    serde_json::json!({
        "client": {
            "installation_id": app.installation_id,
            "app_title": app.app_title,
            "app_version_name": app.app_version_name,
            "app_version_code": app.app_version_code,
            "app_package_name": app.app_package_name,
        },
        "custom": context.custom,
        "env": context.environment,
        "environment": context.environment,
    })
    .to_string()
}

/// The runtime's response as the function's output; an empty body is `null`.
fn decode<O: DeserializeOwned>(body: &[u8]) -> Result<O, FunctionError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"null"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        FunctionError::new(
            "Runtime.InvalidResponse",
            format!("the runtime's response is not the function's output type: {e}"),
        )
    })
}

fn too_large(size: Option<u64>) -> FunctionError {
    let size = size.map_or_else(|| "more than 6291556".to_owned(), |n| n.to_string());
    FunctionError::new(
        "Function.ResponseSizeTooLarge",
        format!(
            "Response payload size ({size} bytes) exceeded maximum allowed payload size (6291556 bytes)."
        ),
    )
    .not_retryable()
}
