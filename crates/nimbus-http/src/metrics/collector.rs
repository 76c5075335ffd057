//! [`RuntimeCollector`]: a prometheus-client [`Collector`] that reads a runtime's counters, its
//! mappings and the server's retry memory at each scrape. Nothing is recorded per invocation:
//! the runtime's own counters are the source.

use std::sync::Arc;
use std::time::Duration;

use nimbus_core::{AsyncMetrics, DurationHistogram, FunctionMetrics, Runtime};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::label::Escaped;
use super::mapping::{MappingProbe, MappingSnapshot};
use crate::invoke::{RetryCache, RetryCacheStats};

/// The upper bounds, in seconds, of `nimbus_function_duration_seconds`' buckets: from 100 µs
/// to Lambda's 15-minute limit, then `+Inf`.
pub const DURATION_BUCKETS: [f64; 15] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Reads a runtime's metrics at each scrape, for a prometheus-client
/// [`Registry`](prometheus_client::registry::Registry): register it with
/// `registry.register_collector(Box::new(collector))`. The [`Server`](crate::Server) serves
/// one at `/metrics`; a host with its own registry can use this one.
///
/// See the [module](crate::metrics) for the metrics.
#[derive(Clone)]
pub struct RuntimeCollector {
    runtime: Runtime,
    mappings: Vec<(String, Arc<dyn MappingProbe>)>,
    retries: Option<RetryCache>,
}

impl std::fmt::Debug for RuntimeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeCollector")
            .field(
                "mappings",
                &self.mappings.iter().map(|m| &m.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl RuntimeCollector {
    /// A collector of `runtime`'s functions and concurrency.
    pub fn new(runtime: Runtime) -> Self {
        Self {
            runtime,
            mappings: Vec::new(),
            retries: None,
        }
    }

    /// Adds an event source mapping: `probe` is read at each scrape.
    #[must_use]
    pub fn with_mapping(mut self, name: impl Into<String>, probe: impl MappingProbe) -> Self {
        self.mappings.push((name.into(), Arc::new(probe)));
        self
    }

    /// Adds mappings already shared.
    pub(crate) fn with_mappings(mut self, mappings: Vec<(String, Arc<dyn MappingProbe>)>) -> Self {
        self.mappings.extend(mappings);
        self
    }

    /// Adds the server's retry memory.
    pub(crate) fn with_retry_memory(mut self, retries: RetryCache) -> Self {
        self.retries = Some(retries);
        self
    }
}

/// One function's numbers, read once per scrape.
struct FunctionRow {
    name: String,
    metrics: FunctionMetrics,
    async_metrics: AsyncMetrics,
    durations: DurationHistogram,
}

impl FunctionRow {
    fn read(runtime: &Runtime, name: String) -> Option<Self> {
        // A function unregistered during the scrape is left out.
        Some(Self {
            metrics: runtime.metrics(&name)?,
            async_metrics: runtime.async_metrics(&name)?,
            durations: runtime.duration_histogram(&name)?,
            name,
        })
    }

    fn label(&self) -> [(&'static str, Escaped<'_>); 1] {
        [("function", Escaped(&self.name))]
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows: Vec<FunctionRow> = self
            .runtime
            .function_names()
            .into_iter()
            .filter_map(|name| FunctionRow::read(&self.runtime, name))
            .collect();
        encode_functions(&mut encoder, &rows)?;
        encode_async(&mut encoder, &rows)?;
        let mappings: Vec<(&str, MappingSnapshot)> = self
            .mappings
            .iter()
            .map(|(name, probe)| (name.as_str(), probe.snapshot()))
            .collect();
        encode_mappings(&mut encoder, &mappings)?;
        encode_runtime(&mut encoder, &self.runtime)?;
        if let Some(retries) = &self.retries {
            encode_retry_memory(&mut encoder, retries.stats())?;
        }
        Ok(())
    }
}

fn encode_functions(
    encoder: &mut DescriptorEncoder,
    rows: &[FunctionRow],
) -> Result<(), std::fmt::Error> {
    counter(
        encoder,
        "nimbus_function_invocations",
        "Invocations that ran or tried to run a handler, throttles excluded (CloudWatch: Invocations).",
        rows.iter().map(|r| (r.label(), r.metrics.invocations)),
    )?;
    counter(
        encoder,
        "nimbus_function_errors",
        "Invocations that failed: function errors, timeouts, panics and init failures (CloudWatch: Errors).",
        rows.iter().map(|r| {
            let m = &r.metrics;
            (r.label(), m.errors + m.timeouts + m.panics + m.init_failures)
        }),
    )?;
    counter(
        encoder,
        "nimbus_function_timeouts",
        "Invocations stopped at the function's timeout, counted in errors too (CloudWatch: Errors; the log's Task timed out).",
        rows.iter().map(|r| (r.label(), r.metrics.timeouts)),
    )?;
    counter(
        encoder,
        "nimbus_function_throttles",
        "Invocations refused for want of concurrency, by reason: function_limit, runtime_limit or scale_rate (CloudWatch: Throttles).",
        rows.iter().flat_map(|r| {
            let m = &r.metrics;
            [
                ("function_limit", m.throttled_function_limit),
                ("runtime_limit", m.throttled_runtime_limit),
                ("scale_rate", m.throttled_scale_rate),
            ]
            .map(|(reason, n)| {
                (
                    [("function", Escaped(&r.name)), ("reason", Escaped(reason))],
                    n,
                )
            })
        }),
    )?;
    counter(
        encoder,
        "nimbus_function_cold_starts",
        "Instances initialised for an invocation, provisioned ones excluded (CloudWatch: none; the REPORT line's Init Duration).",
        rows.iter().map(|r| (r.label(), r.metrics.cold_starts)),
    )?;
    counter(
        encoder,
        "nimbus_function_recursive_loops",
        "Invocations stopped at the recursion hop limit (CloudWatch: RecursiveInvocationsDropped).",
        rows.iter().map(|r| (r.label(), r.metrics.recursive_loops)),
    )?;
    duration_histogram(encoder, rows)?;
    gauge(
        encoder,
        "nimbus_function_concurrent_executions",
        None,
        "Invocations running now (CloudWatch: ConcurrentExecutions).",
        rows.iter()
            .map(|r| (r.label(), r.metrics.concurrency as u64)),
    )?;
    gauge(
        encoder,
        "nimbus_function_instances",
        None,
        "Instances alive now, by state: busy or idle (warm) (CloudWatch: none; Lambda's execution environments).",
        rows.iter().flat_map(|r| {
            let m = &r.metrics;
            let busy = m.instances.saturating_sub(m.instances_idle);
            [("busy", busy), ("idle", m.instances_idle)].map(|(state, n)| {
                (
                    [("function", Escaped(&r.name)), ("state", Escaped(state))],
                    n as u64,
                )
            })
        }),
    )
}

/// `nimbus_function_duration_seconds`: the core's histogram, read at [`DURATION_BUCKETS`].
fn duration_histogram(
    encoder: &mut DescriptorEncoder,
    rows: &[FunctionRow],
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let bounds = DURATION_BUCKETS.map(Duration::from_secs_f64);
    let mut metric = encoder.encode_descriptor(
        "nimbus_function_duration",
        "Time handlers ran, per invocation (CloudWatch: Duration). The sum is estimated from \
         the runtime's log-linear buckets, within 12.5 %; a duration within 12.5 % below a \
         bucket's bound may be counted in the next bucket.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for row in rows {
        let count = row.durations.count();
        // prometheus-client takes each bucket's own count and accumulates them.
        let mut buckets = Vec::with_capacity(DURATION_BUCKETS.len() + 1);
        let mut below = 0;
        for (bound, cumulative) in DURATION_BUCKETS
            .iter()
            .zip(row.durations.cumulative(&bounds))
        {
            buckets.push((*bound, cumulative - below));
            below = cumulative;
        }
        buckets.push((f64::MAX, count - below));
        metric
            .encode_family(&row.label())?
            .encode_histogram::<NoLabelSet>(
                seconds(row.durations.estimated_sum()),
                count,
                &buckets,
                None,
            )?;
    }
    Ok(())
}

fn encode_async(
    encoder: &mut DescriptorEncoder,
    rows: &[FunctionRow],
) -> Result<(), std::fmt::Error> {
    counter(
        encoder,
        "nimbus_function_async_events_received",
        "Events accepted for asynchronous invocation (CloudWatch: AsyncEventsReceived).",
        rows.iter().map(|r| (r.label(), r.async_metrics.accepted)),
    )?;
    counter(
        encoder,
        "nimbus_function_async_events_failed",
        "Async events that took the failure path after their retries or maximum age (CloudWatch: AsyncEventsDropped, for those no destination took).",
        rows.iter().map(|r| (r.label(), r.async_metrics.failed)),
    )?;
    counter(
        encoder,
        "nimbus_function_async_retries",
        "Retries of async events scheduled after a failed attempt (CloudWatch: none; Lambda retries twice by default).",
        rows.iter().map(|r| (r.label(), r.async_metrics.retries)),
    )?;
    gauge(
        encoder,
        "nimbus_function_async_queue_depth",
        None,
        "Async events queued and ready to run now (CloudWatch: none; Lambda's internal event queue).",
        rows.iter().map(|r| (r.label(), r.async_metrics.queue_depth as u64)),
    )?;
    gauge(
        encoder,
        "nimbus_function_async_events_pending",
        None,
        "Async events not finished: queued, waiting for a retry, or running.",
        rows.iter()
            .map(|r| (r.label(), r.async_metrics.pending as u64)),
    )?;
    gauge(
        encoder,
        "nimbus_function_async_oldest_event_age",
        Some(&Unit::Seconds),
        "Age of the oldest async event queued or waiting for a retry (CloudWatch: AsyncEventAge).",
        rows.iter()
            .map(|r| (r.label(), seconds(r.async_metrics.oldest_event_age))),
    )
}

fn encode_mappings(
    encoder: &mut DescriptorEncoder,
    mappings: &[(&str, MappingSnapshot)],
) -> Result<(), std::fmt::Error> {
    gauge(
        encoder,
        "nimbus_mapping_backlog",
        None,
        "Records waiting in an event source mapping's source (SQS: ApproximateNumberOfMessagesVisible).",
        mappings.iter().filter_map(|(name, s)| {
            let backlog = s.backlog?;
            Some((mapping_label(name, s), backlog))
        }),
    )?;
    gauge(
        encoder,
        "nimbus_mapping_iterator_age",
        Some(&Unit::Seconds),
        "Age of the oldest record a stream mapping has not yet handled (CloudWatch: IteratorAge).",
        mappings.iter().filter_map(|(name, s)| {
            let age = s.iterator_age?;
            Some((mapping_label(name, s), seconds(age)))
        }),
    )
}

fn mapping_label<'a>(
    name: &'a str,
    snapshot: &'a MappingSnapshot,
) -> [(&'static str, Escaped<'a>); 2] {
    [
        ("mapping", Escaped(name)),
        ("function", Escaped(&snapshot.function)),
    ]
}

fn encode_runtime(
    encoder: &mut DescriptorEncoder,
    runtime: &Runtime,
) -> Result<(), std::fmt::Error> {
    let c = runtime.concurrency();
    single_gauge(
        encoder,
        "nimbus_runtime_concurrent_executions",
        None,
        "Invocations running now across all functions (CloudWatch: ConcurrentExecutions, account-wide).",
        c.in_flight as u64,
    )?;
    single_gauge(
        encoder,
        "nimbus_runtime_concurrency_limit",
        None,
        "The runtime-wide concurrency limit (Lambda's account concurrency quota).",
        c.limit as u64,
    )?;
    single_gauge(
        encoder,
        "nimbus_runtime_reserved_concurrency",
        None,
        "Concurrency reserved by functions with max_concurrency or provisioned instances.",
        c.reserved as u64,
    )?;
    single_gauge(
        encoder,
        "nimbus_runtime_unreserved_concurrent_executions",
        None,
        "Unreserved concurrency in use now (CloudWatch: UnreservedConcurrentExecutions).",
        c.unreserved_in_use as u64,
    )
}

fn encode_retry_memory(
    encoder: &mut DescriptorEncoder,
    stats: RetryCacheStats,
) -> Result<(), std::fmt::Error> {
    single_gauge(
        encoder,
        "nimbus_http_retry_memory_entries",
        None,
        "Answers kept for SDK retries (same amz-sdk-invocation-id) now.",
        stats.entries as u64,
    )?;
    single_gauge(
        encoder,
        "nimbus_http_retry_memory_in_flight",
        None,
        "Invocations running that an SDK retry would attach to.",
        stats.in_flight as u64,
    )?;
    single_gauge(
        encoder,
        "nimbus_http_retry_memory",
        Some(&Unit::Bytes),
        "Memory the kept answers hold.",
        stats.bytes as u64,
    )?;
    single_gauge(
        encoder,
        "nimbus_http_retry_memory_limit",
        Some(&Unit::Bytes),
        "The bound on the retry memory (retry_memory_bytes).",
        stats.limit_bytes as u64,
    )?;
    single_counter(
        encoder,
        "nimbus_http_retry_hits",
        "SDK retries answered from memory or by attaching to a running invocation.",
        stats.hits,
    )?;
    single_counter(
        encoder,
        "nimbus_http_retry_evictions",
        "Answers evicted before they expired to stay within the memory bound.",
        stats.evictions,
    )
}

/// A counter without labels.
fn single_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, u64, f64>(&value, None)
}

/// A gauge without labels.
fn single_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    unit: Option<&Unit>,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, unit, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A counter family (the encoder adds `_total`); left out when it has no samples.
fn counter<L: EncodeLabelSet, V: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, V, f64>(&value, None)?;
    }
    Ok(())
}

/// A gauge family (the encoder adds the unit); left out when it has no samples.
fn gauge<L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    unit: Option<&Unit>,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in samples {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}
