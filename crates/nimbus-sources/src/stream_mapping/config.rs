//! A stream mapping's configuration, validated when the mapping is built.

use std::time::Duration;

use nimbus_core::Backoff;

use crate::error::ConfigError;
use crate::stream::Position;

/// Configuration of a stream mapping (Lambda's event source mapping for Kinesis).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_sources::StreamMappingConfig;
///
/// let config = StreamMappingConfig::new("clicks")
///     .with_parallelization_factor(3)
///     .with_bisect_on_error(true)
///     .with_max_retry_attempts(5);
/// assert!(config.validate(true).is_ok());
/// // Discarding records needs somewhere to send them.
/// assert_eq!(config.validate(false).unwrap_err().field, "on_failure");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamMappingConfig {
    /// The mapping's name (checkpoints and leases are kept under it).
    pub name: String,
    /// The stream's name, for the ARN that on-failure records give
    /// (`arn:aws:kinesis:<region>:<account>:stream/<name>`, in the runtime's region and
    /// account); `None` (the default) names the mapping instead.
    pub stream_name: Option<String>,
    /// Where to start a shard that has no checkpoint (default `TrimHorizon`).
    pub starting_position: Position,
    /// Records per batch at most (1..=10,000, default 100).
    pub batch_size: usize,
    /// Bytes per batch at most, as Lambda's Kinesis event would hold them (data as base64,
    /// plus each record's keys, numbers and fixed JSON); estimated, not serialised
    /// (1..=6,291,456, default 6 MiB, Lambda's payload limit). What does not fit goes to the
    /// next batch, in order; a single record larger than the limit goes alone.
    pub max_batch_bytes: usize,
    /// How long to gather records into a batch (0..=300 s, default 0).
    pub batching_window: Duration,
    /// Concurrent batches per shard, order kept per partition key (1..=10, default 1; up to
    /// 100 with `extended_parallelization`, a nimbus extension).
    pub parallelization_factor: u32,
    /// Allows a parallelization factor above Lambda's 10.
    pub extended_parallelization: bool,
    /// Split a failing batch in two, recursively; splits do not count as retries.
    pub bisect_on_error: bool,
    /// Retries of a failing batch before it goes to the on-failure destination
    /// (-1 = until the records expire, or 0..=10,000; default -1).
    pub max_retry_attempts: i64,
    /// Records older than this go to the on-failure destination unhandled
    /// (`None` = never, or 60 s..=7 days; default `None`).
    pub max_record_age: Option<Duration>,
    /// Honour `StreamResponse::item_failures` (Lambda's `ReportBatchItemFailures`; default
    /// false, as Lambda: a response listing failed items is then a success, and the whole
    /// batch is checkpointed).
    pub report_batch_item_failures: bool,
    /// Tumbling windows of this length, with state carried between invocations
    /// (0 = off, up to 900 s; needs a parallelization factor of 1).
    pub tumbling_window: Duration,
    /// Waits between retries of a failing batch (default 1 s doubling to 30 s; every delay
    /// within 1 ms..=24 h).
    pub retry_backoff: Backoff,
    /// Long-poll wait of each read (0..=1 h, default 20 s).
    pub poll_wait: Duration,
    /// How long a shard lease lasts unless renewed (1 s..=1 h, default 30 s); renewed every
    /// third of it.
    pub lease_ttl: Duration,
    /// This process's identity in the lease store (default: random). A mapping appends a
    /// random suffix per start (`<owner>#<16 hex digits>`), so that two processes or two
    /// mappings started from one configuration never share a name, and so never both pass
    /// the checkpoint fence; the configured part still tells an operator whose lease it is.
    pub owner: String,
    /// Filter patterns on the record's `data` (Lambda's `FilterCriteria` for Kinesis), OR-ed,
    /// at most [`crate::MAX_PATTERNS`]; records no pattern matches are skipped: checkpointed
    /// past, never handed to the function. Empty: every record is handled.
    pub filters: Vec<String>,
}

impl StreamMappingConfig {
    /// The defaults, with a name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            stream_name: None,
            starting_position: Position::TrimHorizon,
            batch_size: 100,
            max_batch_bytes: super::MAX_BATCH_BYTES,
            batching_window: Duration::ZERO,
            parallelization_factor: 1,
            extended_parallelization: false,
            bisect_on_error: false,
            max_retry_attempts: -1,
            max_record_age: None,
            report_batch_item_failures: false,
            tumbling_window: Duration::ZERO,
            retry_backoff: Backoff::new(Duration::from_secs(1), 2.0, Duration::from_secs(30), 0.2)
                .expect("valid default"),
            poll_wait: Duration::from_secs(20),
            lease_ttl: Duration::from_secs(30),
            owner: format!("nimbus-{:016x}", fastrand::u64(..)),
            filters: Vec::new(),
        }
    }

    /// Names the stream in the ARN of on-failure records.
    #[must_use]
    pub fn with_stream_name(mut self, stream: impl Into<String>) -> Self {
        self.stream_name = Some(stream.into());
        self
    }

    /// Sets the starting position.
    #[must_use]
    pub fn with_starting_position(mut self, position: Position) -> Self {
        self.starting_position = position;
        self
    }

    /// Adds a filter pattern on `data`, e.g. `{"data": {"type": ["order"]}}` (data that is
    /// JSON) or `{"data": [{"prefix": "ERROR"}]}` (text).
    #[must_use]
    pub fn with_filter(mut self, pattern: impl Into<String>) -> Self {
        self.filters.push(pattern.into());
        self
    }

    /// Sets the batch size.
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets the byte limit of a batch.
    #[must_use]
    pub fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Sets the batching window.
    #[must_use]
    pub fn with_batching_window(mut self, window: Duration) -> Self {
        self.batching_window = window;
        self
    }

    /// Sets the parallelization factor.
    #[must_use]
    pub fn with_parallelization_factor(mut self, factor: u32) -> Self {
        self.parallelization_factor = factor;
        self
    }

    /// Allows a parallelization factor up to 100.
    #[must_use]
    pub fn with_extended_parallelization(mut self, on: bool) -> Self {
        self.extended_parallelization = on;
        self
    }

    /// Splits failing batches.
    #[must_use]
    pub fn with_bisect_on_error(mut self, on: bool) -> Self {
        self.bisect_on_error = on;
        self
    }

    /// Sets the retry limit (-1 = until the records expire).
    #[must_use]
    pub fn with_max_retry_attempts(mut self, attempts: i64) -> Self {
        self.max_retry_attempts = attempts;
        self
    }

    /// Sets the maximum record age.
    #[must_use]
    pub fn with_max_record_age(mut self, age: Duration) -> Self {
        self.max_record_age = Some(age);
        self
    }

    /// Honours partial batch responses (`StreamResponse::item_failures`) or not.
    #[must_use]
    pub fn with_report_batch_item_failures(mut self, on: bool) -> Self {
        self.report_batch_item_failures = on;
        self
    }

    /// Turns on tumbling windows of this length.
    #[must_use]
    pub fn with_tumbling_window(mut self, window: Duration) -> Self {
        self.tumbling_window = window;
        self
    }

    /// Sets the waits between retries.
    #[must_use]
    pub fn with_retry_backoff(mut self, backoff: Backoff) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// Sets the long-poll wait.
    #[must_use]
    pub fn with_poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }

    /// Sets the lease time-to-live.
    #[must_use]
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Sets this process's lease owner id (a random suffix is appended per start, see
    /// [`StreamMappingConfig::owner`]).
    #[must_use]
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Checks every field. `has_on_failure` says whether an on-failure destination is set:
    /// a mapping that may discard records (a retry limit or a maximum age) needs one, so that
    /// nothing is dropped silently.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range.
    pub fn validate(&self, has_on_failure: bool) -> Result<(), ConfigError> {
        let err = |field, value: &dyn std::fmt::Debug, allowed: &str| {
            Err(ConfigError::new("stream mapping", field, value, allowed))
        };
        if self.name.is_empty() || self.name.len() > 128 {
            return err("name", &self.name, "1 to 128 characters");
        }
        if let Some(stream) = &self.stream_name {
            let ok = (1..=128).contains(&stream.len())
                && stream
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return err(
                    "stream_name",
                    stream,
                    "1 to 128 characters of a-z, A-Z, 0-9, '_', '.' and '-'",
                );
            }
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return err("batch_size", &self.batch_size, "1..=10000");
        }
        if !(1..=super::MAX_BATCH_BYTES).contains(&self.max_batch_bytes) {
            return err("max_batch_bytes", &self.max_batch_bytes, "1..=6291456");
        }
        if self.batching_window > Duration::from_secs(300) {
            return err("batching_window", &self.batching_window, "0s..=300s");
        }
        let max_factor = if self.extended_parallelization {
            100
        } else {
            10
        };
        if !(1..=max_factor).contains(&self.parallelization_factor) {
            return err(
                "parallelization_factor",
                &self.parallelization_factor,
                if self.extended_parallelization {
                    "1..=100"
                } else {
                    "1..=10 (up to 100 with extended_parallelization)"
                },
            );
        }
        if !(-1..=10_000).contains(&self.max_retry_attempts) {
            return err(
                "max_retry_attempts",
                &self.max_retry_attempts,
                "-1 or 0..=10000",
            );
        }
        if let Some(age) = self.max_record_age {
            if !(Duration::from_secs(60)..=Duration::from_secs(604_800)).contains(&age) {
                return err("max_record_age", &age, "60s..=604800s (or none)");
            }
        }
        if self.tumbling_window > Duration::from_secs(900) {
            return err("tumbling_window", &self.tumbling_window, "0s..=900s");
        }
        if !self.tumbling_window.is_zero() && self.parallelization_factor != 1 {
            return err(
                "tumbling_window",
                &self.tumbling_window,
                "0s when parallelization_factor is above 1",
            );
        }
        if self.poll_wait > Duration::from_secs(3_600) {
            return err("poll_wait", &self.poll_wait, "0s..=1h");
        }
        crate::status::check_backoff("stream mapping", "retry_backoff", &self.retry_backoff)?;
        if !(Duration::from_secs(1)..=Duration::from_secs(3_600)).contains(&self.lease_ttl) {
            return err("lease_ttl", &self.lease_ttl, "1s..=1h");
        }
        crate::filter::Filters::parse_for_streams(&self.filters)?;
        let discards = self.max_retry_attempts >= 0 || self.max_record_age.is_some();
        if discards && !has_on_failure {
            return err(
                "on_failure",
                &"none",
                "a destination when max_retry_attempts or max_record_age can discard records",
            );
        }
        Ok(())
    }
}
