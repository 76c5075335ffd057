//! Broker scenarios of `nimbus bench` (feature `brokers`): records/s from a preloaded queue on
//! a real broker through the nimbus adapter and a queue mapping to a no-op function, beside a
//! raw client loop doing the same receive-then-delete work on the same broker, in the same run.
//!
//! Both sides drain the same number of messages in batches of 100 and delete each batch after
//! it is handled (at-least-once, as the adapters are); the raw loops are one task, the nimbus
//! side has as many pollers as the mapping scales to. Each repetition runs the adapter and then
//! the raw loop, so the two are measured side by side; the rows give the median over the
//! repetitions and the adapter's share of the raw loop in each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus::sources::{BatchResponse, QueueBatch, QueueMapping, QueueMappingConfig, QueueSource};
use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};

use super::stats::{median, round1, Row};

type Error = Box<dyn std::error::Error>;

const BATCH: usize = 100;

/// Runs a broker scenario `reps` times (each run returns one row per system, nimbus first)
/// and folds the runs into one row per system: the median rate, its range, and nimbus's share
/// of each raw loop (`percent_of_raw`, the median of the runs; `percent_of_raw_per_rep`).
pub(crate) async fn repeated<F, Fut>(reps: usize, run: F) -> Result<Vec<Row>, Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Row>, Error>>,
{
    let mut runs = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        runs.push(run().await?);
    }
    let first = &runs[0];
    let mut rows: Vec<Row> = (0..first.len())
        .map(|i| {
            let took: Vec<Duration> = runs
                .iter()
                .map(|run| Duration::from_secs_f64(run[i].seconds))
                .collect();
            let mut row =
                Row::repeated(&first[i].scenario, &first[i].system, first[i].events, &took);
            if let Some(adapter) = first[i].extra.get("adapter") {
                row = row.with("adapter", adapter.clone());
            }
            row
        })
        .collect();
    // nimbus's share of each raw loop, per run (the same run's figures), then the median.
    for i in 1..first.len() {
        let shares: Vec<f64> = runs
            .iter()
            .map(|run| run[i].seconds / run[0].seconds.max(f64::MIN_POSITIVE) * 100.0)
            .collect();
        let key = if i == 1 {
            "percent_of_raw".to_owned()
        } else {
            format!("percent_of_raw_{i}")
        };
        let per_rep: Vec<serde_json::Value> = shares.iter().map(|p| round1(*p).into()).collect();
        rows[0] = rows[0]
            .clone()
            .with(&key, round1(median(&shares)))
            .with(&format!("{key}_per_rep"), per_rep);
    }
    Ok(rows)
}

fn redis_url() -> String {
    std::env::var("NIMBUS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn postgres_url() -> String {
    std::env::var("NIMBUS_POSTGRES_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".to_owned())
}

fn unique(tag: &str) -> String {
    format!(
        "nimbus_bench_{tag}_{}_{:08x}",
        std::process::id(),
        fastrand::u32(..)
    )
}

/// Drains `n` messages from `queue` through a mapping to a no-op function; the time from the
/// mapping's start until it deleted the last one.
async fn drain_with_mapping(queue: impl QueueSource, n: u64) -> Result<Duration, Error> {
    let runtime = Runtime::default();
    let noop = runtime
        .register(Function::new(
            "noop",
            handler_fn(|_batch: QueueBatch, _ctx: Context| async {
                Ok::<_, FunctionError>(BatchResponse::success())
            }),
        ))
        .await?;
    let started = Instant::now();
    let mapping = QueueMapping::start(
        queue,
        noop,
        QueueMappingConfig::new("bench")
            .with_batch_size(BATCH)
            .with_batching_window(Duration::from_millis(1)),
    )?;
    while mapping.metrics().deleted < n {
        if started.elapsed() > Duration::from_secs(120) {
            let m = mapping.metrics();
            return Err(format!(
                "the mapping deleted {} of {n} messages in 2 minutes ({} source errors)",
                m.deleted, m.source_errors
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    mapping.stop(Duration::from_secs(5)).await;
    runtime.shutdown(Duration::from_secs(5)).await;
    Ok(took)
}

fn body(i: u64) -> String {
    format!("{{\"n\":{i}}}")
}

/// Redis: `RedisQueue` (consumer group) vs a raw redis-rs `XREADGROUP` + `XACK`/`XDEL` loop.
pub(crate) async fn redis(n: u64) -> Result<Vec<Row>, Error> {
    use nimbus::redis::{RedisConfig, RedisQueue};
    let client = redis::Client::open(redis_url())?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| {
            format!(
                "Redis at {} is unreachable ({e}); set NIMBUS_REDIS_URL",
                redis_url()
            )
        })?;
    let scenario = "redis/queue";

    // nimbus: preload through the adapter (not timed), then drain.
    let key = unique("redis");
    let queue = Arc::new(RedisQueue::connect(RedisConfig::new(redis_url(), &key)).await?);
    let mut senders = tokio::task::JoinSet::new();
    for part in 0..16 {
        let queue = Arc::clone(&queue);
        senders.spawn(async move {
            for i in (part..n).step_by(16) {
                queue.send(body(i).into()).await?;
            }
            Ok::<_, nimbus::redis::RedisError>(())
        });
    }
    while let Some(sent) = senders.join_next().await {
        sent??;
    }
    let nimbus = drain_with_mapping(queue, n).await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .arg(format!("{key}:dlq"))
        .arg(format!("{key}:released"))
        .query_async(&mut con)
        .await?;
    let nimbus = nimbus?;

    // Raw: the same messages in a stream read by a consumer group.
    let key = unique("redis_raw");
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("b")
                .arg(body(*i))
                .ignore();
        }
        let _: () = pipe.query_async(&mut con).await?;
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("raw")
        .arg("0")
        .query_async(&mut con)
        .await?;
    let started = Instant::now();
    let mut handled = 0u64;
    while handled < n {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("raw")
            .arg("c")
            .arg("COUNT")
            .arg(BATCH)
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query_async(&mut con)
            .await?;
        let ids: Vec<String> = reply
            .keys
            .into_iter()
            .flat_map(|k| k.ids.into_iter().map(|entry| entry.id))
            .collect();
        if ids.is_empty() {
            continue;
        }
        let _: (i64, i64) = redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&key)
            .arg("raw")
            .arg(&ids)
            .cmd("XDEL")
            .arg(&key)
            .arg(&ids)
            .query_async(&mut con)
            .await?;
        handled += ids.len() as u64;
    }
    let raw = started.elapsed();
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut con).await?;
    Ok(rows(
        scenario,
        "RedisQueue",
        "raw redis-rs XREADGROUP/XACK",
        n,
        nimbus,
        raw,
    ))
}

/// PostgreSQL: `PostgresQueue` vs a raw tokio-postgres `FOR UPDATE SKIP LOCKED` loop (claim a
/// batch by moving its `visible_at`, then delete it).
pub(crate) async fn postgres(n: u64) -> Result<Vec<Row>, Error> {
    use nimbus::postgres::{PostgresConfig, PostgresQueue};
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            format!(
                "PostgreSQL at {} is unreachable ({e}); set NIMBUS_POSTGRES_URL",
                postgres_url()
            )
        })?;
    tokio::spawn(connection);
    let scenario = "postgres/queue";
    let bodies: Vec<String> = (0..n).map(body).collect();

    let name = unique("pg");
    let nimbus = async {
        let queue = PostgresQueue::connect(PostgresConfig::new(postgres_url(), &name)).await?;
        for chunk in bodies.chunks(1_000) {
            let chunk: Vec<&[u8]> = chunk.iter().map(|b| b.as_bytes()).collect();
            queue.send_batch(&chunk).await?;
        }
        drain_with_mapping(queue, n).await
    }
    .await;
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {name}_queue; DROP TABLE IF EXISTS {name}_dead;"
        ))
        .await?;
    let nimbus = nimbus?;

    let table = unique("pg_raw");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, body BYTEA NOT NULL,
                 visible_at TIMESTAMPTZ NOT NULL DEFAULT now(), receive_count INT NOT NULL DEFAULT 0)"
        ))
        .await?;
    for chunk in bodies.chunks(1_000) {
        let chunk: Vec<&[u8]> = chunk.iter().map(|b| b.as_bytes()).collect();
        client
            .execute(
                &format!("INSERT INTO {table} (body) SELECT * FROM unnest($1::bytea[])"),
                &[&chunk],
            )
            .await?;
    }
    let claim = client
        .prepare(&format!(
            "WITH c AS (SELECT id FROM {table} WHERE visible_at <= now() ORDER BY id
                        LIMIT {BATCH} FOR UPDATE SKIP LOCKED)
             UPDATE {table} t SET visible_at = now() + interval '30 seconds',
                 receive_count = t.receive_count + 1
             FROM c WHERE t.id = c.id RETURNING t.id, t.body"
        ))
        .await?;
    let delete = client
        .prepare(&format!("DELETE FROM {table} WHERE id = ANY($1)"))
        .await?;
    let started = Instant::now();
    let mut handled = 0u64;
    while handled < n {
        let rows = client.query(&claim, &[]).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        if ids.is_empty() {
            continue;
        }
        client.execute(&delete, &[&ids]).await?;
        handled += ids.len() as u64;
    }
    let raw = started.elapsed();
    client.batch_execute(&format!("DROP TABLE {table}")).await?;
    Ok(rows(
        scenario,
        "PostgresQueue",
        "raw tokio-postgres SKIP LOCKED",
        n,
        nimbus,
        raw,
    ))
}

/// NATS JetStream: `NatsQueue` vs a raw async-nats pull-consumer loop (a continuous pull
/// stream; each 100 messages acknowledged with confirmed acks, as the adapter does, so both
/// have the same guarantee).
pub(crate) async fn nats(n: u64) -> Result<Vec<Row>, Error> {
    use async_nats::jetstream;
    use nimbus::nats::{NatsConfig, NatsQueue};
    let client = async_nats::connect(nats_url()).await.map_err(|e| {
        format!(
            "NATS at {} is unreachable ({e}); set NIMBUS_NATS_URL",
            nats_url()
        )
    })?;
    let js = jetstream::new(client);
    let scenario = "nats/queue";

    let name = unique("nats");
    let nimbus = async {
        let queue = Arc::new(NatsQueue::connect(NatsConfig::new(nats_url(), &name)).await?);
        preload_nats(&js, &name, n).await?;
        drain_with_mapping(queue, n).await
    }
    .await;
    let _ = js.delete_stream(&name).await;
    let nimbus = nimbus?;

    let confirmed = raw_nats(&js, n, true).await?;
    let plain = raw_nats(&js, n, false).await?;
    let mut out = rows(
        scenario,
        "NatsQueue",
        "raw async-nats pull, confirmed acks",
        n,
        nimbus,
        confirmed,
    );
    // For context: acks sent without waiting for the server (weaker than the adapter's).
    out.push(Row::throughput(
        scenario,
        "raw async-nats pull, plain acks",
        n,
        plain,
    ));
    Ok(out)
}

/// A raw pull loop over a fresh work-queue stream of `n` messages; acks are confirmed by the
/// server (`double_ack`) when `confirmed`, else only sent.
async fn raw_nats(
    js: &async_nats::jetstream::Context,
    n: u64,
    confirmed: bool,
) -> Result<Duration, Error> {
    use async_nats::jetstream::{consumer, stream};
    use futures_util::StreamExt;
    let name = unique("nats_raw");
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![name.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 120_000,
            ..Default::default()
        })
        .await?;
    preload_nats(js, &name, n).await?;
    let raw = async {
        let started = Instant::now();
        // The continuous pull stream keeps a batch requested ahead, so the server is never
        // waiting for the next request.
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .messages()
            .await?;
        let mut handled = 0u64;
        let mut acks = Vec::with_capacity(BATCH);
        while handled < n {
            let Some(message) = messages.next().await else {
                return Err("the pull stream ended".into());
            };
            let message = message.map_err(|e| e.to_string())?;
            acks.push(async move {
                if confirmed {
                    message.double_ack().await
                } else {
                    message.ack().await
                }
            });
            if acks.len() == BATCH || handled + acks.len() as u64 == n {
                for ack in futures_util::future::join_all(acks.drain(..)).await {
                    ack.map_err(|e| e.to_string())?;
                    handled += 1;
                }
            }
        }
        Ok::<_, Error>(started.elapsed())
    }
    .await;
    let _ = js.delete_stream(&name).await;
    raw
}

fn nats_url() -> String {
    std::env::var("NIMBUS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Publishes `n` messages to `subject`, 1,000 awaiting their stored-acks at a time.
async fn preload_nats(
    js: &async_nats::jetstream::Context,
    subject: &str,
    n: u64,
) -> Result<(), Error> {
    let ids: Vec<u64> = (0..n).collect();
    for chunk in ids.chunks(1_000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for i in chunk {
            let ack = js.publish(subject.to_owned(), body(*i).into()).await?;
            acks.push(std::future::IntoFuture::into_future(ack));
        }
        for ack in futures_util::future::join_all(acks).await {
            ack?;
        }
    }
    Ok(())
}

fn rows(
    scenario: &str,
    adapter: &str,
    raw_name: &str,
    n: u64,
    nimbus: Duration,
    raw: Duration,
) -> Vec<Row> {
    let percent = raw.as_secs_f64() / nimbus.as_secs_f64().max(f64::MIN_POSITIVE) * 100.0;
    vec![
        Row::throughput(scenario, "nimbus", n, nimbus)
            .with("adapter", adapter)
            .with("percent_of_raw", percent.round() as u64),
        Row::throughput(scenario, raw_name, n, raw),
    ]
}
