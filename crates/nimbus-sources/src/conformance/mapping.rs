//! A mapping over an adapter, through a disruption, with a bound on duplicates.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use super::{fail, source, QueueProducer, Violation};

/// Concurrent batches of the kit's mapping at most, and records per batch.
const CONCURRENCY: u32 = 4;
const BATCH_SIZE: usize = 10;

/// The most duplicate handlings [`mapping_survives`] accepts: twice what its mapping can hold
/// at once (4 batches of 10). A disruption may cost each batch in flight its acknowledgement
/// (those messages return after their visibility timeout and are handled again), and an
/// adapter reconnecting may lose a second round; more than that is an adapter that loses
/// acknowledgements, or delivers what it should not. The same for every `total`.
pub const fn max_duplicates() -> usize {
    2 * CONCURRENCY as usize * BATCH_SIZE
}

/// A queue mapping over `queue` keeps every message through a disruption: sends `total`
/// messages, drains them through a mapping (2 to 4 concurrent batches, a little work per
/// batch), calls `disrupt` once a sixth is handled (kill the adapter's connections, cut a
/// proxy, restart nothing: whatever the adapter must survive), and checks that every message
/// was handled at least once and that, after the mapping stops and whatever an acknowledgement
/// lost to the disruption left pending comes back, nothing unhandled remains. Returns how many
/// handlings were duplicates: handled twice, or back in the queue after being handled, which
/// must be at most [`max_duplicates`].
///
/// Runs in real time; with a visibility timeout of about two seconds it takes a few seconds.
///
/// # Errors
///
/// The first [`Violation`].
pub async fn mapping_survives<Q, D, Fut>(
    queue: std::sync::Arc<Q>,
    total: usize,
    disrupt: D,
) -> Result<usize, Violation>
where
    Q: QueueProducer,
    D: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    use std::sync::Arc;

    use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};

    use crate::{BatchResponse, QueueBatch, QueueMapping, QueueMappingConfig};

    let check = "mapping survives";
    for i in 0..total {
        queue
            .produce(Bytes::from(format!("m{i}")))
            .await
            .map_err(source(check))?;
    }
    let runtime = Runtime::default();
    // Distinct bodies handled, and handlings in all; the handler publishes the distinct count.
    let seen: Arc<parking_lot::Mutex<(HashSet<String>, usize)>> = Arc::default();
    let (progress, watched) = tokio::sync::watch::channel(0usize);
    let progress = Arc::new(progress);
    let visibility = queue.visibility_timeout().unwrap_or(Duration::from_secs(2));
    let function = runtime
        .register(
            Function::new(
                "conformance",
                handler_fn({
                    let seen = Arc::clone(&seen);
                    move |batch: QueueBatch, _ctx: Context| {
                        let (seen, progress) = (Arc::clone(&seen), Arc::clone(&progress));
                        async move {
                            // A little work, so the disruption lands while batches are in flight.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            let count = {
                                let mut seen = seen.lock();
                                for r in &batch.records {
                                    seen.0.insert(r.body_str().unwrap_or_default().to_owned());
                                }
                                seen.1 += batch.records.len();
                                seen.0.len()
                            };
                            progress.send_replace(count);
                            Ok::<_, FunctionError>(BatchResponse::success())
                        }
                    }
                }),
            )
            .with_timeout((visibility / 2).max(Duration::from_millis(100))),
        )
        .await
        .map_err(|e| fail(check, format!("registering the function: {e}")))?;
    let mapping = QueueMapping::start(
        Arc::clone(&queue),
        function,
        QueueMappingConfig::new("conformance")
            .with_poll_wait(Duration::from_millis(500))
            .with_batch_size(BATCH_SIZE)
            .with_max_concurrency(CONCURRENCY)
            .with_initial_concurrency(2),
    )
    .map_err(|e| fail(check, format!("starting the mapping: {e}")))?;
    let reached = |want: usize, within: Duration| {
        let mut watched = watched.clone();
        async move {
            matches!(
                tokio::time::timeout(within, watched.wait_for(|n| *n >= want)).await,
                Ok(Ok(_))
            )
        }
    };
    if !reached((total / 6).max(1), Duration::from_secs(20)).await {
        return Err(fail(check, "no progress before the disruption"));
    }
    disrupt().await;
    let all = reached(total, Duration::from_secs(60)).await;
    mapping.stop(Duration::from_secs(15)).await;
    runtime.shutdown(Duration::from_secs(5)).await;
    if !all {
        return Err(fail(
            check,
            format!(
                "{} of {total} handled after the disruption",
                seen.lock().0.len()
            ),
        ));
    }
    let bound = max_duplicates();
    let too_many = |duplicates: usize| {
        fail(
            check,
            format!(
                "{duplicates} duplicate handlings of {total} messages, more than {bound}: \
                 acknowledgements are lost, or messages delivered twice"
            ),
        )
    };
    let mut duplicates = {
        let seen = seen.lock();
        seen.1 - seen.0.len()
    };
    if duplicates > bound {
        return Err(too_many(duplicates));
    }
    // What an acknowledgement lost to the disruption left pending returns after the visibility
    // timeout; it must be something already handled (a duplicate), and then nothing remains.
    loop {
        let left = queue
            .receive(100, visibility + Duration::from_secs(1))
            .await
            .map_err(source(check))?;
        if left.is_empty() {
            break;
        }
        for m in &left {
            let body = String::from_utf8_lossy(&m.body).into_owned();
            if !seen.lock().0.contains(&body) {
                return Err(fail(
                    check,
                    format!("{body} came back but was never handled"),
                ));
            }
        }
        duplicates += left.len();
        if duplicates > bound {
            return Err(too_many(duplicates));
        }
        let receipts: Vec<_> = left.iter().map(|m| m.receipt.clone()).collect();
        queue.ack(&receipts).await.map_err(source(check))?;
    }
    Ok(duplicates)
}
