//! The demo: a few functions with different shapes, driven by concurrent callers for a moment.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus::sources::{
    BatchResponse, InMemoryObjectStore, InMemoryQueue, InMemoryStream, NotificationConfig,
    NotificationRule, ObjectStore, Outgoing, QueueBatch, QueueConfig, QueueMapping,
    QueueMappingConfig, S3Event, StreamBatch, StreamConfig, StreamMapping, StreamMappingConfig,
    StreamResponse,
};
use nimbus::{
    handler_fn, init_fn, Backoff, Context, Function, FunctionError, InitContext, InvocationRecord,
    InvokeError, Runtime, RuntimeConfig, ThrottleReason,
};

/// Options of `nimbus demo`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoArgs {
    /// How long to drive load, in seconds.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Concurrent callers.
    #[arg(long, default_value_t = 16)]
    callers: usize,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            seconds: 2.0,
            callers: 16,
        }
    }
}

/// Outcomes the callers saw, by class.
#[derive(Debug, Default)]
struct Seen {
    ok: AtomicU64,
    function_errors: AtomicU64,
    timeouts: AtomicU64,
    panics: AtomicU64,
    throttled: [AtomicU64; 3],
    other: AtomicU64,
}

impl Seen {
    fn record<O>(&self, result: &Result<O, InvokeError>) {
        let counter = match result {
            Ok(_) => &self.ok,
            Err(InvokeError::Function(_)) => &self.function_errors,
            Err(InvokeError::Timeout(_)) => &self.timeouts,
            Err(InvokeError::Panic(_)) => &self.panics,
            Err(InvokeError::Throttled(ThrottleReason::FunctionLimit)) => &self.throttled[0],
            Err(InvokeError::Throttled(ThrottleReason::RuntimeLimit)) => &self.throttled[1],
            Err(InvokeError::Throttled(_)) => &self.throttled[2],
            Err(_) => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) async fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        return Err(format!("--seconds {} is outside (0, 600]", args.seconds).into());
    }
    if !(1..=10_000).contains(&args.callers) {
        return Err(format!("--callers {} is outside 1..=10000", args.callers).into());
    }
    // Handler panics are an expected outcome here; keep their messages off the terminal.
    std::panic::set_hook(Box::new(|_| {}));

    let runtime = Runtime::new(RuntimeConfig::default().with_concurrency_limit(64))?;

    // An image resizer with an expensive init (a cold start), two provisioned instances.
    let resize = runtime
        .register(
            Function::with_factory(
                "resize",
                init_fn(|init: InitContext| async move {
                    tokio::time::sleep(Duration::from_millis(30)).await; // load a model, say
                    let instance = init.instance_number();
                    Ok::<_, FunctionError>(handler_fn(move |px: u32, _ctx: Context| async move {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        Ok::<_, FunctionError>((instance, px / 2))
                    }))
                }),
            )
            .with_memory_mb(1024)
            .with_min_instances(2)
            .with_max_concurrency(8),
        )
        .await?;

    // A checkout that sometimes fails and sometimes hangs past its timeout.
    let checkout = runtime
        .register(
            Function::new(
                "checkout",
                handler_fn(|order: u64, _ctx: Context| async move {
                    if order % 20 == 1 {
                        return Err(FunctionError::new(
                            "PaymentDeclined",
                            format!("order {order}"),
                        ));
                    }
                    let work = if order % 50 == 6 { 200 } else { 1 };
                    tokio::time::sleep(Duration::from_millis(work)).await;
                    Ok(order)
                }),
            )
            .with_timeout(Duration::from_millis(100))
            .with_memory_mb(256),
        )
        .await?;

    // A parser that panics on some input: the instance is discarded, nothing else notices.
    let parse = runtime
        .register(Function::new(
            "parse",
            handler_fn(|n: u64, _ctx: Context| async move {
                assert!(n % 30 != 2, "cannot parse record {n}");
                Ok::<_, FunctionError>(n.to_string().len())
            }),
        ))
        .await?;

    // A report builder with a small reservation: callers beyond it are throttled at once.
    let report = runtime
        .register(
            Function::new(
                "report",
                handler_fn(|n: u64, _ctx: Context| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<_, FunctionError>(n)
                }),
            )
            .with_max_concurrency(2)
            .with_memory_mb(512),
        )
        .await?;

    // A notifier invoked asynchronously: a third of its attempts fail, failed attempts are
    // retried, and every event ends in a destination.
    let (on_success, mut succeeded) = tokio::sync::mpsc::unbounded_channel();
    let (on_failure, mut failed) = tokio::sync::mpsc::unbounded_channel();
    let notify = runtime
        .register(
            Function::new(
                "notify",
                handler_fn(|n: u64, ctx: Context| async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if (n + u64::from(ctx.attempt())) % 3 == 0 || n % 97 == 0 {
                        return Err(FunctionError::new(
                            "SmtpUnavailable",
                            format!("message {n}"),
                        ));
                    }
                    Ok::<_, FunctionError>(n)
                }),
            )
            .with_retry_backoff(Backoff::fixed(Duration::from_millis(50)).unwrap())
            .with_on_success(on_success)
            .with_on_failure(on_failure),
        )
        .await?;
    // A queue mapping: uploads drained in batches of 10; every 100th upload is corrupt and
    // ends in the dead-letter queue after three receives.
    let ingest = runtime
        .register(
            Function::new(
                "ingest",
                handler_fn(|batch: QueueBatch, _ctx: Context| async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    let corrupt = batch
                        .records
                        .iter()
                        .filter(|r| r.body_str().is_ok_and(|b| b.ends_with("99")))
                        .map(|r| r.message_id.clone());
                    Ok::<_, FunctionError>(BatchResponse::failures(corrupt))
                }),
            )
            .with_timeout(Duration::from_millis(100)),
        )
        .await?;
    let dead_letters = Arc::new(InMemoryQueue::new(QueueConfig::default())?);
    let uploads = Arc::new(InMemoryQueue::new(
        QueueConfig::default()
            .with_visibility_timeout(Duration::from_millis(200))
            .with_redrive(dead_letters.clone(), 3),
    )?);
    uploads.send_batch(
        (0..5_000)
            .map(|i| Outgoing::new(format!("upload-{i}")))
            .collect::<Vec<_>>(),
    )?;
    let mapping = QueueMapping::start(uploads.clone(), ingest, QueueMappingConfig::new("uploads"))?;

    // A stream mapping: click events on a 2-shard stream, 2 lanes per shard; every 50th batch
    // fails once and is retried, blocking its shard meanwhile.
    let batches_seen = Arc::new(AtomicU64::new(0));
    let sessionize = runtime
        .register(Function::new(
            "sessionize",
            handler_fn({
                let batches_seen = batches_seen.clone();
                move |_batch: StreamBatch, ctx: Context| {
                    let n = batches_seen.fetch_add(1, Ordering::Relaxed);
                    async move {
                        // The stream mapping numbers the attempts of a batch.
                        if n % 50 == 49 && ctx.attempt() == 1 {
                            return Err(FunctionError::msg("session store busy"));
                        }
                        Ok::<_, FunctionError>(StreamResponse::success())
                    }
                }
            }),
        ))
        .await?;
    let clicks = Arc::new(InMemoryStream::new(StreamConfig::default().with_shards(2))?);
    for i in 0..4_000 {
        clicks.put(&format!("user-{}", i % 97), format!("click-{i}"))?;
    }
    let stream_mapping = StreamMapping::builder(
        clicks.clone(),
        sessionize,
        StreamMappingConfig::new("clicks")
            .with_parallelization_factor(2)
            .with_batch_size(50)
            .with_retry_backoff(Backoff::fixed(Duration::from_millis(20)).unwrap()),
    )
    .in_memory_store()
    .start()?;

    // Object notifications: photos put under `photos/` trigger a thumbnailer (async), which
    // writes under `thumbs/`, a prefix its rule excludes, so it never triggers itself.
    let objects_cell: Arc<std::sync::OnceLock<Arc<InMemoryObjectStore>>> = Arc::default();
    let thumbnail = runtime
        .register(Function::new(
            "thumbnail",
            handler_fn({
                let objects_cell = objects_cell.clone();
                move |message: S3Event, _ctx: Context| {
                    let objects_cell = objects_cell.clone();
                    async move {
                        let store = objects_cell
                            .get()
                            .ok_or_else(|| FunctionError::msg("store not ready"))?;
                        for event in &message.records {
                            let key = event.key();
                            let thumb = format!("thumbs/{}", key.trim_start_matches("photos/"));
                            store
                                .put(event.bucket(), &thumb, format!("thumbnail of {key}").into())
                                .await?;
                        }
                        Ok::<_, FunctionError>(())
                    }
                }
            }),
        ))
        .await?;
    let objects = Arc::new(InMemoryObjectStore::new(NotificationConfig::new(vec![
        NotificationRule::new(
            "photos",
            &["s3:ObjectCreated:*"],
            Arc::new(thumbnail.clone()),
        )?
        .with_prefix("photos/")
        .with_suffix(".jpg"),
    ])?));
    let _ = objects_cell.set(objects.clone());
    objects.create_bucket("album").await?;
    for i in 0..300 {
        objects
            .put(
                "album",
                &format!("photos/img {i}.jpg"),
                vec![0u8; 64].into(),
            )
            .await?;
    }

    println!(
        "nimbus demo: {} callers for {:.1} s over 5 functions, a queue of 5,000 uploads, a stream of 4,000 clicks and 300 photo uploads (runtime limit 64)",
        args.callers, args.seconds
    );
    let seen = Arc::new(Seen::default());
    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    let callers: Vec<_> = (0..args.callers as u64)
        .map(|caller| {
            let (resize, checkout, parse, report, notify, seen) = (
                resize.clone(),
                checkout.clone(),
                parse.clone(),
                report.clone(),
                notify.clone(),
                seen.clone(),
            );
            tokio::spawn(async move {
                let mut i = caller;
                while Instant::now() < until {
                    match i % 5 {
                        0 => seen.record(&resize.invoke(i as u32).await),
                        1 => seen.record(&checkout.invoke(i).await),
                        2 => seen.record(&parse.invoke(i).await),
                        3 => seen.record(&report.invoke(i).await),
                        _ => {
                            if notify.invoke_async(i).is_err() {
                                seen.other.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await?;
    }

    // Give queued async events, retries and the upload queue a moment to finish.
    let drain_until = Instant::now() + Duration::from_secs(3);
    while (notify.async_metrics().pending > 0 || !uploads.is_empty())
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mapping.stop(Duration::from_secs(2)).await;
    let q = mapping.metrics();
    // Every click is in the stream already: drained means every one was handled.
    let left = drain_until.saturating_duration_since(Instant::now());
    let _ = tokio::time::timeout(left, stream_mapping.drained()).await;
    stream_mapping.stop(Duration::from_secs(2)).await;
    let st = stream_mapping.metrics();
    print_report(&runtime, &seen);
    let shutdown = runtime.shutdown(Duration::from_secs(2)).await;
    let a = notify.async_metrics();
    // The destinations are channels; shutdown has stopped the workers, so what is there is all.
    let ok = std::iter::from_fn(|| succeeded.try_recv().ok()).count();
    let failures: Vec<InvocationRecord<u64, u64>> =
        std::iter::from_fn(|| failed.try_recv().ok()).collect();
    if let Some(record) = failures.first() {
        println!(
            "first on-failure record: {:?} after {} attempts, error {:?}",
            record.condition,
            record.approximate_invoke_count,
            record.error.as_ref().map(|e| e.error_type.as_str())
        );
    }
    let ko = failures.len();
    println!(
        "\nasync `notify`: {} accepted, {} retries, {} succeeded, {} failed; destinations got {} on-success and {} on-failure records; {} handed back at shutdown",
        a.accepted, a.retries, a.succeeded, a.failed, ok, ko, shutdown.handed_back.len()
    );
    println!(
        "queue `uploads`: {} received, {} deleted, {} failed attempts, {} dead-lettered, peak {} concurrent batches, {} left",
        q.received,
        q.deleted,
        q.failed,
        dead_letters.len(),
        q.peak_concurrent_batches,
        uploads.len()
    );
    let thumbs = objects.list("album", "thumbs/").await?.len();
    let t = thumbnail.metrics();
    println!(
        "objects `album`: 300 photos put, {} notifications handled by `thumbnail`, {} thumbnails written (no loop: thumbnails are outside the rule)",
        t.successes, thumbs
    );
    println!(
        "stream `clicks`: {} records in {} batches over {} shards, {} retries, iterator age {:?}",
        st.records,
        st.batches,
        st.shards.len(),
        st.retries,
        st.iterator_age
    );
    println!(
        "shutdown: {} in flight, {} finished, {} cancelled, {} idle instances dropped",
        shutdown.in_flight, shutdown.finished, shutdown.cancelled, shutdown.instances_dropped
    );
    let _ = std::panic::take_hook();
    Ok(())
}

fn print_report(runtime: &Runtime, seen: &Seen) {
    println!(
        "\n{:<10} {:>7} {:>7} {:>6} {:>8} {:>6} {:>9} {:>5} {:>5} {:>5} {:>8} {:>8} {:>9} {:>10}",
        "function",
        "invokes",
        "ok",
        "errors",
        "timeouts",
        "panics",
        "throttled",
        "cold",
        "peak",
        "inst",
        "p50",
        "p99",
        "GB-s",
        "cost $"
    );
    let mut total_cost = 0.0;
    for name in runtime.function_names() {
        let (Some(m), Some(u)) = (runtime.metrics(&name), runtime.usage(&name)) else {
            continue;
        };
        total_cost += u.cost;
        println!(
            "{:<10} {:>7} {:>7} {:>6} {:>8} {:>6} {:>9} {:>5} {:>5} {:>5} {:>8} {:>8} {:>9.4} {:>10.7}",
            name,
            m.invocations,
            m.successes,
            m.errors,
            m.timeouts,
            m.panics,
            m.throttles(),
            m.cold_starts,
            m.peak_concurrency,
            m.instances,
            format!("{:.1?}", m.p50),
            format!("{:.1?}", m.p99),
            u.gb_seconds,
            u.cost
        );
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "\ncallers saw: {} ok, {} function errors, {} timeouts, {} panics, throttled {} (function limit) / {} (runtime limit) / {} (scale rate), {} other",
        load(&seen.ok),
        load(&seen.function_errors),
        load(&seen.timeouts),
        load(&seen.panics),
        load(&seen.throttled[0]),
        load(&seen.throttled[1]),
        load(&seen.throttled[2]),
        load(&seen.other),
    );
    println!("estimated cost of the run: ${total_cost:.7} (Lambda x86 prices)");
}
