//! A queue mapping's configuration, validated when the mapping is built.

use std::time::Duration;

use crate::error::ConfigError;
use crate::filter::Filters;

/// Configuration of a queue mapping (Lambda's event source mapping for SQS).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_sources::QueueMappingConfig;
///
/// let config = QueueMappingConfig::new("orders")
///     .with_batch_size(100)
///     .with_batching_window(Duration::from_millis(50))
///     .with_filter(r#"{"body": {"type": ["order"]}}"#);
/// assert!(config.validate().is_ok());
/// let err = QueueMappingConfig::new("orders").with_batch_size(100).validate().unwrap_err();
/// assert_eq!(err.field, "batching_window");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueueMappingConfig {
    /// The mapping's name (used in metrics and as the invoker identity).
    pub name: String,
    /// Records per batch at most (1..=10,000, default 10; above 10 needs a batching window).
    pub batch_size: usize,
    /// How long to gather records into a batch (0..=300 s, default 0).
    pub batching_window: Duration,
    /// Largest batch payload: the records' size in the SQS event JSON (an upper bound,
    /// computed without serialising), with or without a batching window. Default 6 MiB
    /// (6,291,456 bytes), Lambda's invocation payload limit. Messages that do not fit are
    /// released (their receive not counted) for the next batch; a single message larger than
    /// the cap still goes alone.
    pub max_batch_bytes: usize,
    /// Filter patterns, OR-ed (at most 10); non-matching messages are deleted uninvoked.
    pub filters: Vec<String>,
    /// Honour [`crate::BatchResponse::item_failures`] (default true; Lambda's
    /// `ReportBatchItemFailures`). Off, any `Ok` response deletes the whole batch.
    pub report_batch_item_failures: bool,
    /// Split a failing batch to isolate poison messages (a nimbus extension; default false).
    pub bisect_on_error: bool,
    /// Concurrent batches at most (2..=1,000, default 1,000; Lambda's `MaximumConcurrency`).
    pub max_concurrency: u32,
    /// Concurrent batches at start (1..=max_concurrency, default 5, as Lambda).
    pub initial_concurrency: u32,
    /// How fast concurrency may grow (1..=100,000 batches per minute, default 300, as Lambda),
    /// evenly: one at a time, never in a burst.
    pub scale_up_per_minute: u32,
    /// Long-poll wait of each receive (0..=1 h, default 20 s, SQS's longest).
    pub poll_wait: Duration,
    /// The queue's name in the records' `eventSourceARN`
    /// (`arn:aws:sqs:<region>:<account>:<queue_name>`, the region and account being the
    /// runtime's); default: the mapping's name. 1 to 80 characters.
    pub queue_name: Option<String>,
}

impl QueueMappingConfig {
    /// The defaults, with a name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            batch_size: 10,
            batching_window: Duration::ZERO,
            max_batch_bytes: 6 * 1024 * 1024,
            filters: Vec::new(),
            report_batch_item_failures: true,
            bisect_on_error: false,
            max_concurrency: 1_000,
            initial_concurrency: 5,
            scale_up_per_minute: 300,
            poll_wait: Duration::from_secs(20),
            queue_name: None,
        }
    }

    /// Sets the batch size.
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets the batching window.
    #[must_use]
    pub fn with_batching_window(mut self, window: Duration) -> Self {
        self.batching_window = window;
        self
    }

    /// Sets the largest batch payload.
    #[must_use]
    pub fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// Adds a filter pattern.
    #[must_use]
    pub fn with_filter(mut self, pattern: impl Into<String>) -> Self {
        self.filters.push(pattern.into());
        self
    }

    /// Honours partial batch responses or not.
    #[must_use]
    pub fn with_report_batch_item_failures(mut self, on: bool) -> Self {
        self.report_batch_item_failures = on;
        self
    }

    /// Splits failing batches to isolate poison messages.
    #[must_use]
    pub fn with_bisect_on_error(mut self, on: bool) -> Self {
        self.bisect_on_error = on;
        self
    }

    /// Caps concurrent batches.
    #[must_use]
    pub fn with_max_concurrency(mut self, max: u32) -> Self {
        self.max_concurrency = max;
        self
    }

    /// Sets the concurrent batches at start.
    #[must_use]
    pub fn with_initial_concurrency(mut self, initial: u32) -> Self {
        self.initial_concurrency = initial;
        self
    }

    /// Sets how fast concurrency may grow, in batches per minute.
    #[must_use]
    pub fn with_scale_up_per_minute(mut self, per_minute: u32) -> Self {
        self.scale_up_per_minute = per_minute;
        self
    }

    /// Sets the long-poll wait.
    #[must_use]
    pub fn with_poll_wait(mut self, wait: Duration) -> Self {
        self.poll_wait = wait;
        self
    }

    /// Sets the queue name the records' `eventSourceARN` ends with.
    #[must_use]
    pub fn with_queue_name(mut self, name: impl Into<String>) -> Self {
        self.queue_name = Some(name.into());
        self
    }

    /// Checks what a FIFO queue allows, as Lambda does: a batch size of at most 10 and no
    /// batching window. Called when a mapping is built over a source whose
    /// [`QueueSource::is_fifo`](crate::QueueSource::is_fifo) says so.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming `batch_size` or `batching_window` and the range.
    pub fn check_fifo(&self) -> Result<(), ConfigError> {
        if !(1..=10).contains(&self.batch_size) {
            return Err(ConfigError::new(
                "mapping",
                "batch_size",
                self.batch_size,
                "1..=10 on a FIFO queue",
            ));
        }
        if !self.batching_window.is_zero() {
            return Err(ConfigError::new(
                "mapping",
                "batching_window",
                self.batching_window,
                "0s on a FIFO queue (Lambda supports no batching window there)",
            ));
        }
        Ok(())
    }

    /// Checks every field; parses the filters.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range, or the filter that does not parse.
    pub fn validate(&self) -> Result<Filters, ConfigError> {
        let err = |field, value: &dyn std::fmt::Debug, allowed: &str| {
            Err(ConfigError::new("mapping", field, value, allowed))
        };
        if self.name.is_empty() || self.name.len() > 128 {
            return err("name", &self.name, "1 to 128 characters");
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return err("batch_size", &self.batch_size, "1..=10000");
        }
        if self.batching_window > Duration::from_secs(300) {
            return err("batching_window", &self.batching_window, "0s..=300s");
        }
        if self.batch_size > 10 && self.batching_window.is_zero() {
            return err(
                "batching_window",
                &self.batching_window,
                "more than 0s when batch_size is above 10",
            );
        }
        if !(1..=256 * 1024 * 1024).contains(&self.max_batch_bytes) {
            return err("max_batch_bytes", &self.max_batch_bytes, "1..=268435456");
        }
        if !(2..=1_000).contains(&self.max_concurrency) {
            return err("max_concurrency", &self.max_concurrency, "2..=1000");
        }
        if !(1..=self.max_concurrency).contains(&self.initial_concurrency) {
            return err(
                "initial_concurrency",
                &self.initial_concurrency,
                &format!("1..=max_concurrency ({})", self.max_concurrency),
            );
        }
        if !(1..=100_000).contains(&self.scale_up_per_minute) {
            return err(
                "scale_up_per_minute",
                &self.scale_up_per_minute,
                "1..=100000",
            );
        }
        if self.poll_wait > Duration::from_secs(3_600) {
            return err("poll_wait", &self.poll_wait, "0s..=1h");
        }
        if let Some(queue) = &self.queue_name {
            if queue.is_empty() || queue.chars().count() > 80 {
                return err("queue_name", queue, "1 to 80 characters");
            }
        }
        Filters::parse(&self.filters)
    }
}
