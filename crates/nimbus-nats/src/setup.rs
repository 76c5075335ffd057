//! Getting or creating what a queue needs on the server (the stream, its durable consumer, the
//! dead-letter stream), and reading its counts.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::stream::{self, RetentionPolicy};
use async_nats::jetstream::ErrorCode;
use nimbus_sources::QueueStats;

use crate::config::NatsConfig;
use crate::error::NatsError;

/// Gets the stream, or creates it with work-queue retention.
///
/// Work-queue retention because that is a queue's contract: the stream deletes a message once
/// it is acknowledged (as SQS's `DeleteMessage`), so it holds only the backlog and needs no
/// size or age limits; and JetStream allows only one consumer per subject on it, which is the
/// shape wanted here, one durable consumer shared by every process of the queue. (Limits
/// retention would keep acknowledged messages until a limit evicted them, unacknowledged ones
/// included.)
pub(crate) async fn open_stream(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
) -> Result<stream::Stream, NatsError> {
    if !config.create_if_missing {
        return jetstream.get_stream(&config.stream).await.map_err(|e| {
            NatsError::Setup(format!(
                "stream {} (create_if_missing is off): {e}",
                config.stream
            ))
        });
    }
    get_or_create(
        jetstream,
        stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.subject.clone()],
            retention: RetentionPolicy::WorkQueue,
            ..Default::default()
        },
        "create stream",
    )
    .await
}

/// Gets or creates a stream, trying up to 4 times in all (50, 100 and 150 ms apart) when the
/// server failed to create its store (status 500, error 10049). The 2.9.10 server removes an account's storage
/// directory when the account's last stream is deleted, and a stream created at that moment
/// fails with "error creating store for stream" (10049): with another process's streams
/// coming and going, connecting would fail now and then for nothing.
async fn get_or_create(
    jetstream: &jetstream::Context,
    config: stream::Config,
    what: &'static str,
) -> Result<stream::Stream, NatsError> {
    let mut failed = 0u64;
    loop {
        match jetstream.get_or_create_stream(config.clone()).await {
            Err(error) if failed < 3 && server_failed(&error.kind()) => {
                failed += 1;
                tokio::time::sleep(Duration::from_millis(50 * failed)).await;
            }
            done => return done.map_err(NatsError::broker(what)),
        }
    }
}

/// The server's 500 "error creating store for stream" (10049), and not the other 500s, which
/// say something permanent (limits, a configuration it cannot take).
fn server_failed(kind: &CreateStreamErrorKind) -> bool {
    matches!(kind, CreateStreamErrorKind::JetStream(error)
        if error.code() == 500 && error.error_code() == ErrorCode::STREAM_CREATE)
}

/// Gets the durable pull consumer, or creates (or updates) it.
pub(crate) async fn open_consumer(
    stream: &stream::Stream,
    config: &NatsConfig,
) -> Result<PullConsumer, NatsError> {
    if !config.create_if_missing {
        return stream.get_consumer(&config.consumer).await.map_err(|e| {
            NatsError::Setup(format!(
                "pull consumer {} on stream {} (create_if_missing is off): {e}",
                config.consumer, config.stream
            ))
        });
    }
    // Created or updated, so that `ack_wait` follows the config of the process that connects.
    stream
        .create_consumer(pull::Config {
            durable_name: Some(config.consumer.clone()),
            filter_subject: config.subject.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            // Unlimited: the adapter, not the server, stops redelivery after
            // max_receive_count, by redriving on the delivery after the last allowed one. A
            // server-side limit would strand a message whose redrive failed on that last
            // delivery; unlimited, it comes back and the redrive is tried again.
            max_deliver: -1,
            max_ack_pending: i64::from(config.max_in_flight),
            ..Default::default()
        })
        .await
        .map_err(NatsError::broker("create consumer"))
}

/// The stream that captures the dead-letter subject: found by subject, or created as
/// `<stream>_dead` (limits retention, nothing reads it but people and tests).
pub(crate) async fn open_dead_letter_stream(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
) -> Result<String, NatsError> {
    let subject = config.dead_letter_subject();
    match jetstream.stream_by_subject(subject.as_str()).await {
        Ok(name) => return Ok(name),
        Err(error) if !config.create_if_missing => {
            return Err(NatsError::Setup(format!(
                "no stream captures the dead-letter subject {subject} (create_if_missing is off): {error}"
            )))
        }
        Err(_) => {}
    }
    let name = config.dead_letter_stream();
    get_or_create(
        jetstream,
        stream::Config {
            name: name.clone(),
            subjects: vec![subject],
            // Longer than any gap between two redrives of one message (a failed terminate is
            // retried on the next delivery, one ack_wait later), so the second is dropped.
            duplicate_window: (config.ack_wait * 2).max(Duration::from_secs(120)),
            ..Default::default()
        },
        "create dead-letter stream",
    )
    .await?;
    Ok(name)
}

pub(crate) async fn dead_letter_count(
    jetstream: &jetstream::Context,
    stream: &str,
) -> Result<u64, NatsError> {
    let mut stream = jetstream
        .get_stream(stream)
        .await
        .map_err(NatsError::broker("dead-letter stream info"))?;
    let info = stream
        .info()
        .await
        .map_err(NatsError::broker("dead-letter stream info"))?;
    Ok(info.state.messages)
}

pub(crate) async fn fetch_stats(
    jetstream: &jetstream::Context,
    config: &NatsConfig,
    dead_stream: Option<&str>,
) -> Result<QueueStats, NatsError> {
    let info = jetstream
        .get_stream_no_info(&config.stream)
        .await
        .map_err(NatsError::broker("consumer info"))?
        .consumer_info(&config.consumer)
        .await
        .map_err(NatsError::broker("consumer info"))?;
    let dead = match dead_stream {
        Some(stream) => dead_letter_count(jetstream, stream).await?,
        None => 0,
    };
    Ok(stats_of(&info, dead))
}

pub(crate) fn stats_of(
    info: &async_nats::jetstream::consumer::Info,
    dead_lettered: u64,
) -> QueueStats {
    let mut stats = QueueStats::default();
    stats.visible = info.num_pending;
    stats.in_flight = info.num_ack_pending as u64;
    stats.dead_lettered = dead_lettered;
    stats
}

pub(crate) fn timed_out() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer within request_timeout",
    )
}
