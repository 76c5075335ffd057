//! Connection, naming and delivery settings of [`crate::NatsQueue`], checked before connecting.

use std::time::Duration;

use nimbus_sources::queue_limits;
use nimbus_sources::ConfigError;

/// The scope named in configuration errors: `invalid nats config: ...`.
const SCOPE: &str = "nats";

/// Longest stream or consumer name accepted. Short enough that `<stream>_dead` is valid too.
const MAX_NAME_LEN: usize = 64;
/// Longest subject accepted.
const MAX_SUBJECT_LEN: usize = 255;
/// Bounds of `request_timeout`.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bounds of `max_in_flight`; the default is SQS's in-flight limit of a standard queue.
const MAX_IN_FLIGHT: u32 = 1_000_000;
const DEFAULT_IN_FLIGHT: u32 = 120_000;

/// Settings of a [`crate::NatsQueue`]: which server, which stream, subject and durable consumer,
/// how long a received message stays invisible, and where messages go after too many receives.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_nats::NatsConfig;
///
/// let config = NatsConfig::new("nats://127.0.0.1:4222", "ORDERS")
///     .with_subject("orders.new")
///     .with_ack_wait(Duration::from_secs(60))
///     .with_max_receive_count(5);
/// assert!(config.validate().is_ok());
/// assert_eq!(config.dead_letter_subject(), "orders.new.dead");
/// assert_eq!(config.dead_letter_stream(), "ORDERS_dead");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsConfig {
    /// The server, e.g. `nats://127.0.0.1:4222`; several, separated by commas, for a cluster.
    pub url: String,
    /// The JetStream stream holding the queue (1 to 64 of `A-Z a-z 0-9 _ -`).
    pub stream: String,
    /// The subject messages are published to and the stream captures (default: the stream's
    /// name). A literal subject: dot-separated tokens, no wildcards.
    pub subject: String,
    /// The durable pull consumer that every process of the queue shares (default `nimbus`).
    pub consumer: String,
    /// How long a received message stays invisible before JetStream delivers it again: the
    /// consumer's `ack_wait`, the queue's visibility timeout (default 30 s, 1 ms to 12 h).
    ///
    /// A queue reads the consumer's `ack_wait` once, when it connects, and refuses receipts
    /// older than that (JetStream would honour them). Every process of a queue must use the
    /// same value; after changing it, reconnect every process's queue (connecting brings the
    /// consumer in line with the config, unless `create_if_missing` is off). A queue left
    /// connected meanwhile goes by the old value: if the new one is shorter it may acknowledge
    /// a message already delivered again to someone else (who handles it too), if longer it
    /// refuses receipts still current (their messages come back and are handled again). At
    /// least once either way; nothing is lost.
    pub ack_wait: Duration,
    /// Messages received and not yet acknowledged, across every process of the queue: the
    /// consumer's `max_ack_pending` (default 120,000, SQS's limit; 1 to 1,000,000). At the
    /// limit, receives find nothing until some are acknowledged: backpressure, not an error.
    /// (The server's own default, 1,000, is less than a mapping at full concurrency holds.)
    pub max_in_flight: u32,
    /// Redrive a message to the dead-letter subject when it is delivered more often than this
    /// (default none: redeliver forever). 1 to 1000.
    pub max_receive_count: Option<u32>,
    /// Where redriven messages are published (default `<subject>.dead`).
    pub dead_letter_subject: Option<String>,
    /// How long to wait for the server's answer to a request (a fetch beyond its long poll, an
    /// ack, a nak, a publish, a stream or consumer lookup) before failing it with
    /// [`nimbus_sources::SourceError::Broker`] (default 5 s, 100 ms to 60 s). A connection that
    /// drops loses the answers on their way; this bounds how long a poller waits for them.
    pub request_timeout: Duration,
    /// Create the stream, the consumer and the dead-letter stream when they are missing, and
    /// bring the consumer's `ack_wait` in line with this config (default true). When false,
    /// they must exist and are used as they are.
    pub create_if_missing: bool,
    /// Largest message body a send accepts (1,024..=1,048,576 bytes, default 1 MiB, as SQS);
    /// a larger one is refused before it reaches the server.
    pub max_message_size: usize,
}

impl NatsConfig {
    /// Settings for the stream `stream` on the server at `url`.
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> Self {
        let stream = stream.into();
        Self {
            url: url.into(),
            subject: stream.clone(),
            stream,
            consumer: "nimbus".to_owned(),
            ack_wait: Duration::from_secs(30),
            max_in_flight: DEFAULT_IN_FLIGHT,
            max_receive_count: None,
            dead_letter_subject: None,
            request_timeout: Duration::from_secs(5),
            create_if_missing: true,
            max_message_size: queue_limits::MAX_MESSAGE_SIZE,
        }
    }

    /// Sets the subject.
    #[must_use]
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// Sets the durable consumer's name.
    #[must_use]
    pub fn with_consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = consumer.into();
        self
    }

    /// Sets the visibility timeout (`ack_wait`).
    #[must_use]
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Sets the in-flight limit.
    #[must_use]
    pub fn with_max_in_flight(mut self, max: u32) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Redrives after this many receives.
    #[must_use]
    pub fn with_max_receive_count(mut self, count: u32) -> Self {
        self.max_receive_count = Some(count);
        self
    }

    /// Sets the dead-letter subject.
    #[must_use]
    pub fn with_dead_letter_subject(mut self, subject: impl Into<String>) -> Self {
        self.dead_letter_subject = Some(subject.into());
        self
    }

    /// Sets the largest message a send accepts.
    #[must_use]
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the request timeout.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Whether to create what is missing.
    #[must_use]
    pub fn with_create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// The subject redriven messages are published to.
    pub fn dead_letter_subject(&self) -> String {
        self.dead_letter_subject
            .clone()
            .unwrap_or_else(|| format!("{}.dead", self.subject))
    }

    /// The stream created to capture the dead-letter subject: `<stream>_dead`.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_dead", self.stream)
    }

    /// The server addresses in `url`.
    pub(crate) fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, ConfigError> {
        let invalid = || {
            ConfigError::new(
                SCOPE,
                "url",
                &self.url,
                "nats:// or tls:// server addresses, separated by commas",
            )
        };
        self.url
            .split(',')
            .map(|url| {
                let addr: async_nats::ServerAddr = url.trim().parse().map_err(|_| invalid())?;
                // ws:// and wss:// parse, but the client is built without websockets.
                let scheme = addr.clone().into_inner().scheme().to_owned();
                let host = addr.host().to_owned();
                if (scheme == "nats" || scheme == "tls") && !host.is_empty() {
                    Ok(addr)
                } else {
                    Err(invalid())
                }
            })
            .collect()
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field, its value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.servers()?;
        check_name("stream", &self.stream)?;
        check_subject("subject", &self.subject)?;
        check_name("consumer", &self.consumer)?;
        // `ack_wait` is the queue's visibility timeout, with the range every queue has.
        queue_limits::check_visibility_timeout(SCOPE, self.ack_wait).map_err(|mut e| {
            e.field = "ack_wait";
            e
        })?;
        if !(1..=MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            return Err(ConfigError::new(
                SCOPE,
                "max_in_flight",
                self.max_in_flight,
                "1..=1000000",
            ));
        }
        if !(MIN_REQUEST_TIMEOUT..=MAX_REQUEST_TIMEOUT).contains(&self.request_timeout) {
            return Err(ConfigError::new(
                SCOPE,
                "request_timeout",
                self.request_timeout,
                "100ms..=60s",
            ));
        }
        if let Some(count) = self.max_receive_count {
            queue_limits::check_max_receive_count(SCOPE, count)?;
        }
        queue_limits::check_max_message_size(SCOPE, self.max_message_size)?;
        if let Some(subject) = &self.dead_letter_subject {
            check_subject("dead_letter_subject", subject)?;
            // Captured by the queue's own stream, a dead letter would be delivered again.
            if *subject == self.subject {
                return Err(ConfigError::new(
                    SCOPE,
                    "dead_letter_subject",
                    subject,
                    "a subject other than `subject`",
                ));
            }
        }
        Ok(())
    }
}

/// Stream and consumer names: JetStream forbids `.`, `*`, `>`, whitespace and path separators;
/// the portable subset is letters, digits, `_` and `-`.
fn check_name(field: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            SCOPE,
            field,
            name,
            "1 to 64 of A-Z a-z 0-9 _ -",
        ))
    }
}

/// Literal subjects only: messages are published to them, and a wildcard cannot be.
fn check_subject(field: &'static str, subject: &str) -> Result<(), ConfigError> {
    let ok = (1..=MAX_SUBJECT_LEN).contains(&subject.len())
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            SCOPE,
            field,
            subject,
            "1 to 255 bytes of dot-separated tokens, no wildcards (`*`, `>`) or whitespace",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NatsConfig {
        NatsConfig::new("nats://127.0.0.1:4222", "ORDERS")
    }

    #[test]
    fn defaults_are_valid() {
        let config = config();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.subject, "ORDERS");
        assert_eq!(config.dead_letter_subject(), "ORDERS.dead");
    }

    #[test]
    fn errors_name_the_field_and_the_allowed_range() {
        let error = config()
            .with_ack_wait(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(error.field, "ack_wait");
        assert_eq!(
            error.to_string(),
            "invalid nats config: ack_wait = 0ns is outside 1ms..=12h"
        );
        let error = config().with_max_receive_count(0).validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid nats config: max_receive_count = 0 is outside 1..=1000"
        );
        assert_eq!(
            config()
                .with_max_receive_count(1001)
                .validate()
                .unwrap_err()
                .field,
            "max_receive_count"
        );
        assert_eq!(
            config().with_max_in_flight(0).validate().unwrap_err().field,
            "max_in_flight"
        );
        assert_eq!(
            config()
                .with_request_timeout(Duration::from_millis(10))
                .validate()
                .unwrap_err()
                .field,
            "request_timeout"
        );
        assert_eq!(
            config()
                .with_ack_wait(Duration::from_secs(13 * 3600))
                .validate()
                .unwrap_err()
                .field,
            "ack_wait"
        );
    }

    #[test]
    fn names_and_subjects_are_checked() {
        for bad in ["", "a.b", "a b", "a*", "x".repeat(65).as_str()] {
            let error = NatsConfig::new("nats://127.0.0.1:4222", bad)
                .with_subject("ok")
                .validate()
                .unwrap_err();
            assert_eq!(error.field, "stream", "{bad:?}");
        }
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "a\tb"] {
            let error = config().with_subject(bad).validate().unwrap_err();
            assert_eq!(error.field, "subject", "{bad:?}");
        }
        assert_eq!(
            config().with_consumer("a.b").validate().unwrap_err().field,
            "consumer"
        );
        assert_eq!(
            config()
                .with_dead_letter_subject("ORDERS")
                .validate()
                .unwrap_err()
                .field,
            "dead_letter_subject"
        );
        assert_eq!(
            config()
                .with_dead_letter_subject("dead.>")
                .validate()
                .unwrap_err()
                .field,
            "dead_letter_subject"
        );
        assert!(config().with_subject("orders.new-1").validate().is_ok());
    }

    #[test]
    fn urls_are_checked() {
        assert!(NatsConfig::new("nats://a:4222,nats://b:4222", "S")
            .validate()
            .is_ok());
        assert!(NatsConfig::new("127.0.0.1:4222", "S").validate().is_ok());
        for bad in ["", " ", "http://x:4222", "ws://x:80", "nats://a:4222,,"] {
            assert_eq!(
                NatsConfig::new(bad, "S").validate().unwrap_err().field,
                "url",
                "{bad:?}"
            );
        }
    }
}
