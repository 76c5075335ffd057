//! The running platform: the file's functions registered, its routes behind the HTTP listener,
//! its buckets watched and its mappings attached; and its graceful stop, which reports what it
//! could not finish.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::error::ServeError;
use super::file::ServeFile;
use super::functions::Registered;
use crate::http::{HttpConfig, MappingSnapshot, Route, Server, Serving};
use crate::sources::{
    DirectoryStore, InMemoryQueue, QueueMapping, QueueMappingMetrics, QueueSource,
};
use crate::{Runtime, ShutdownReport};

/// Everything a file declared, running.
#[derive(Debug)]
pub struct Platform {
    runtime: Runtime,
    serving: Serving,
    functions: Vec<String>,
    mappings: Vec<QueueMapping>,
    queues: Vec<(String, Arc<InMemoryQueue>)>,
    /// The in-memory queues a mapping drains: the ones a stop waits for.
    mapped_queues: Vec<String>,
    buckets: Vec<(String, DirectoryStore)>,
    routes: Vec<Route>,
}

/// What [`Platform::stop`] did, and what it could not finish.
#[derive(Debug)]
#[non_exhaustive]
pub struct StopReport {
    /// The runtime's report: async events handed back (accepted, not finished, or failed and
    /// kept for the host), invocations cancelled, and how each mapping stopped.
    pub shutdown: ShutdownReport,
    /// Each mapping's counters at the end.
    pub mappings: Vec<(String, QueueMappingMetrics)>,
    /// Messages still held by each in-memory queue (they live in this process only).
    pub left_in_queues: Vec<(String, usize)>,
}

impl ServeFile {
    /// Registers the functions on `runtime`, binds the listener, opens the buckets and starts
    /// the mappings, in this order: nothing is taken from a broker or a folder before the
    /// listener is bound.
    ///
    /// # Errors
    ///
    /// A function without `command` that the host does not provide (or a host function the
    /// file does not declare), a failed registration, an address that cannot be bound, a
    /// bucket directory that cannot be opened, or a broker that cannot be reached. What was
    /// started is shut down first.
    pub async fn start(mut self, runtime: Runtime) -> Result<Platform, ServeError> {
        let result = self.start_on(&runtime).await;
        if result.is_err() {
            // What was accepted before the failure (an Event invoke, a bucket's notification)
            // is reported, not dropped with the report.
            let report = runtime.shutdown(Duration::from_secs(1)).await;
            for back in &report.handed_back {
                tracing::warn!(function = %back.function, request_id = %back.request_id,
                    "the start failed: an accepted async event is handed back unfinished");
            }
            if !report.handed_back.is_empty() {
                eprintln!(
                    "the start failed after accepting work: {} async events handed back \
                     unfinished (request ids in the log)",
                    report.handed_back.len()
                );
            }
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
        let prepared = std::mem::take(&mut self.mappings);
        let mapped_queues = prepared
            .iter()
            .filter_map(|m| m.memory_queue().map(str::to_owned))
            .collect();

        // The listener first: a bind failure stops the start before any source is read.
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
        // Each mapping's probe reads the mapping once it has started.
        let mut slots = Vec::new();
        for mapping in &prepared {
            let slot: Arc<OnceLock<QueueMapping>> = Arc::new(OnceLock::new());
            let (probe, function) = (Arc::clone(&slot), mapping.function.clone());
            server = server.observe_mapping(mapping.name.clone(), move || {
                let mut snapshot = MappingSnapshot::new(function.clone());
                if let Some(mapping) = probe.get() {
                    snapshot.backlog = mapping.metrics().backlog;
                }
                snapshot
            });
            slots.push(slot);
        }
        let serving = server
            .bind()
            .await
            .map_err(|e| locator.error(self.bind_line, "bind", e))?;

        match self
            .start_sources(runtime, prepared, slots, &registered, &queues)
            .await
        {
            Ok((mappings, buckets)) => Ok(Platform {
                runtime: runtime.clone(),
                serving,
                functions: registered.into_iter().map(|r| r.name).collect(),
                mappings,
                queues,
                mapped_queues,
                buckets,
                routes: std::mem::take(&mut self.routes),
            }),
            Err(error) => {
                serving.stop_within(Duration::from_secs(1)).await;
                Err(error)
            }
        }
    }

    /// Opens the buckets and starts the mappings (each filling its probe's slot).
    async fn start_sources(
        &mut self,
        runtime: &Runtime,
        prepared: Vec<super::sources::PreparedMapping>,
        slots: Vec<Arc<OnceLock<QueueMapping>>>,
        registered: &[Registered],
        queues: &[(String, Arc<InMemoryQueue>)],
    ) -> Result<(Vec<QueueMapping>, Vec<(String, DirectoryStore)>), ServeError> {
        let locator = self.locator.clone();
        let _ = self.bucket_runtime.set(runtime.clone());
        let mut buckets = Vec::new();
        for bucket in std::mem::take(&mut self.buckets) {
            let name = bucket.name.clone();
            buckets.push((name, bucket.open(&locator).await?));
        }
        let mut mappings = Vec::new();
        for (mapping, slot) in prepared.into_iter().zip(slots) {
            let handle = registered
                .iter()
                .find(|r| r.name == mapping.function)
                .and_then(|r| r.queue_handle.clone())
                .ok_or_else(|| locator.error(None, "function", "no queue function"))?;
            let started = mapping.start(runtime, handle, queues, &locator).await?;
            let _ = slot.set(started.clone());
            mappings.push(started);
        }
        Ok((mappings, buckets))
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

    /// The buckets, by name, with the folder each one is (`<directory>/<name>`).
    pub fn buckets(&self) -> Vec<(&str, std::path::PathBuf)> {
        self.buckets
            .iter()
            .map(|(name, store)| (name.as_str(), store.root().join(name)))
            .collect()
    }

    /// Stops everything within `grace`, in three windows:
    ///
    /// 1. The buckets stop watching, and the listener stops taking requests; those in flight
    ///    get up to a quarter of `grace` (their invocations go on regardless).
    /// 2. The pipeline drains, for up to half of `grace`: until no async event is pending
    ///    (their destinations delivered) and every in-memory queue a mapping drains has no
    ///    message visible or in flight. Destinations deliver to functions and queues that are
    ///    still open, so nothing is refused for being shut down.
    /// 3. The runtime stops the mappings and gives work still in flight the rest of `grace`.
    ///
    /// Async events it could not finish, and failed events kept for the host, are handed back
    /// in the report; what in-memory queues still hold is counted there.
    pub async fn stop(self, grace: Duration) -> StopReport {
        let deadline = tokio::time::Instant::now() + grace;
        drop(self.buckets);
        self.serving.stop_within(grace / 4).await;
        let drain_until = deadline.min(tokio::time::Instant::now() + grace / 2);
        let mapped: Vec<_> = self
            .queues
            .iter()
            .filter(|(name, _)| self.mapped_queues.contains(name))
            .map(|(_, queue)| Arc::clone(queue))
            .collect();
        drain(&self.runtime, &self.functions, &mapped, drain_until).await;
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

/// Waits until no async event is pending and no mapped in-memory queue has a message visible
/// or in flight (delayed ones are not waited for), or the deadline. Nothing signals "drained"
/// across functions and queues, so it looks every 20 ms.
async fn drain(
    runtime: &Runtime,
    functions: &[String],
    queues: &[Arc<InMemoryQueue>],
    deadline: tokio::time::Instant,
) {
    loop {
        let pending: usize = functions
            .iter()
            .filter_map(|name| runtime.async_metrics(name))
            .map(|m| m.pending)
            .sum();
        let mut queued = 0;
        for queue in queues {
            if let Ok(Some(stats)) = QueueSource::stats(queue.as_ref()).await {
                queued += stats.visible + stats.in_flight;
            }
        }
        if pending == 0 && queued == 0 || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + DRAIN_POLL)).await;
    }
}
