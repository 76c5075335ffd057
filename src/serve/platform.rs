//! The running platform: the file's functions registered, its mappings attached, its routes
//! behind the HTTP listener; and its graceful stop, which reports what it could not finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::error::ServeError;
use super::file::ServeFile;
use super::functions::Registered;
use crate::http::{HttpConfig, MappingSnapshot, Route, Server, Serving};
use crate::sources::{InMemoryQueue, QueueMapping, QueueMappingMetrics};
use crate::{Runtime, ShutdownReport};

/// Everything a file declared, running.
#[derive(Debug)]
pub struct Platform {
    runtime: Runtime,
    serving: Serving,
    functions: Vec<String>,
    mappings: Vec<QueueMapping>,
    queues: Vec<(String, Arc<InMemoryQueue>)>,
    routes: Vec<Route>,
}

/// What [`Platform::stop`] did, and what it could not finish.
#[derive(Debug)]
#[non_exhaustive]
pub struct StopReport {
    /// The runtime's report: async events handed back (accepted, not finished), invocations
    /// cancelled, and how each mapping stopped.
    pub shutdown: ShutdownReport,
    /// Each mapping's counters at the end.
    pub mappings: Vec<(String, QueueMappingMetrics)>,
    /// Messages still held by each in-memory queue (they live in this process only).
    pub left_in_queues: Vec<(String, usize)>,
}

impl ServeFile {
    /// Registers the functions on `runtime`, starts the mappings and binds the listener.
    ///
    /// # Errors
    ///
    /// A function without `command` that the host does not provide (or a host function the
    /// file does not declare), a failed registration, a broker that cannot be reached, or an
    /// address that cannot be bound. What was started is shut down first.
    pub async fn start(mut self, runtime: Runtime) -> Result<Platform, ServeError> {
        let result = self.start_on(&runtime).await;
        if result.is_err() {
            runtime.shutdown(Duration::from_secs(1)).await;
        }
        result
    }

    async fn start_on(&mut self, runtime: &Runtime) -> Result<Platform, ServeError> {
        let locator = self.locator.clone();
        let queues: Vec<_> = self.queues.drain(..).map(|q| (q.name, q.queue)).collect();
        let mut registered: Vec<Registered> = Vec::new();
        for function in std::mem::take(&mut self.functions) {
            let host = self.host.remove(&function.name);
            registered.push(function.register(runtime, host, &queues, &locator).await?);
        }
        if let Some(name) = self.host.keys().next() {
            return Err(locator.error(
                None,
                "functions",
                format!("the host provides `{name}`, which the file does not declare"),
            ));
        }
        let mut mappings = Vec::new();
        for mapping in std::mem::take(&mut self.mappings) {
            let handle = registered
                .iter()
                .find(|r| r.name == mapping.function)
                .and_then(|r| r.queue_handle.clone())
                .ok_or_else(|| locator.error(None, "function", "no queue function"))?;
            let function = mapping.function.clone();
            mappings.push((
                mapping.start(runtime, handle, &queues, &locator).await?,
                function,
            ));
        }

        let mut server =
            Server::new(runtime.clone()).with_config(HttpConfig::default().with_bind(self.bind));
        for route in &self.routes {
            server = server.route(route.clone());
        }
        for function in &mut registered {
            if let Some(tails) = function.logs.take() {
                server = server.log_source(function.name.clone(), move |id| tails.get(id));
            }
        }
        for (mapping, function) in &mappings {
            let probe = mapping.clone();
            let function = function.clone();
            server = server.observe_mapping(mapping.name().to_owned(), move || {
                let mut snapshot = MappingSnapshot::new(function.clone());
                snapshot.backlog = probe.metrics().backlog;
                snapshot
            });
        }
        let serving = server
            .bind()
            .await
            .map_err(|e| locator.error(self.bind_line, "bind", e))?;
        Ok(Platform {
            runtime: runtime.clone(),
            serving,
            functions: registered.into_iter().map(|r| r.name).collect(),
            mappings: mappings.into_iter().map(|(mapping, _)| mapping).collect(),
            queues,
            routes: std::mem::take(&mut self.routes),
        })
    }
}

impl Platform {
    /// The runtime the functions run on.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Where the Lambda API, the gateway and `/metrics` listen.
    pub fn local_addr(&self) -> SocketAddr {
        self.serving.local_addr()
    }

    /// The functions, in the file's order.
    pub fn functions(&self) -> &[String] {
        &self.functions
    }

    /// The gateway's routes.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The running mappings.
    pub fn mappings(&self) -> &[QueueMapping] {
        &self.mappings
    }

    /// The in-memory queues, by name.
    pub fn queues(&self) -> &[(String, Arc<InMemoryQueue>)] {
        &self.queues
    }

    /// Stops everything within `grace`: the listener first (requests in flight are answered);
    /// then, for up to half of `grace`, the pipeline drains (async events pending and messages
    /// in in-memory queues, which live in this process only, are left to finish); then the
    /// runtime stops the mappings and gives work still in flight the rest of `grace`. Async
    /// events it could not finish are handed back in the report, and what in-memory queues
    /// still hold is counted there.
    pub async fn stop(self, grace: Duration) -> StopReport {
        let deadline = tokio::time::Instant::now() + grace;
        // Requests in flight get up to half the grace; their invocations go on regardless.
        self.serving.stop_within(grace / 2).await;
        drain(
            &self.runtime,
            &self.functions,
            &self.queues,
            deadline - grace / 2,
        )
        .await;
        let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
        let shutdown = self.runtime.shutdown(rest).await;
        StopReport {
            shutdown,
            mappings: self
                .mappings
                .iter()
                .map(|m| (m.name().to_owned(), m.metrics()))
                .collect(),
            left_in_queues: self
                .queues
                .iter()
                .map(|(name, queue)| (name.clone(), queue.len()))
                .collect(),
        }
    }
}

/// How often [`Platform::stop`] looks whether the pipeline has drained.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Waits until no async event is pending and every in-memory queue is empty, or the
/// deadline. Nothing signals "drained" across functions and queues, so it looks every
/// 20 ms.
async fn drain(
    runtime: &Runtime,
    functions: &[String],
    queues: &[(String, Arc<InMemoryQueue>)],
    deadline: tokio::time::Instant,
) {
    loop {
        let pending: usize = functions
            .iter()
            .filter_map(|name| runtime.async_metrics(name))
            .map(|m| m.pending)
            .sum();
        let queued: usize = queues.iter().map(|(_, queue)| queue.len()).sum();
        if pending + queued == 0 || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + DRAIN_POLL)).await;
    }
}
