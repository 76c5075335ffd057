//! Notification rules: event types, prefix and suffix filters, a target; overlapping rules
//! are rejected as S3 rejects them.

use std::sync::Arc;

use crate::error::{ConfigError, SourceError};
use crate::queue::{InMemoryQueue, Outgoing};
use crate::stream::InMemoryStream;

use nimbus_core::util::aws;

use super::{ObjectEvent, S3Event};

/// An S3 event type, or a wildcard over a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// `ObjectCreated:*`
    CreatedAny,
    /// `ObjectCreated:Put`
    CreatedPut,
    /// `ObjectRemoved:*`
    RemovedAny,
    /// `ObjectRemoved:Delete`
    RemovedDelete,
}

impl EventType {
    /// Parses `s3:ObjectCreated:*` and friends (the `s3:` prefix is optional).
    pub fn parse(text: &str) -> Option<Self> {
        match text.strip_prefix("s3:").unwrap_or(text) {
            "ObjectCreated:*" => Some(Self::CreatedAny),
            "ObjectCreated:Put" => Some(Self::CreatedPut),
            "ObjectRemoved:*" => Some(Self::RemovedAny),
            "ObjectRemoved:Delete" => Some(Self::RemovedDelete),
            _ => None,
        }
    }

    /// The event name as it appears in events (`ObjectCreated:Put`).
    pub fn name(self) -> &'static str {
        match self {
            Self::CreatedAny => "ObjectCreated:*",
            Self::CreatedPut => "ObjectCreated:Put",
            Self::RemovedAny => "ObjectRemoved:*",
            Self::RemovedDelete => "ObjectRemoved:Delete",
        }
    }

    /// Whether a pattern covers a concrete event.
    fn covers(self, event: Self) -> bool {
        self == event
            || (self == Self::CreatedAny && event == Self::CreatedPut)
            || (self == Self::RemovedAny && event == Self::RemovedDelete)
    }

    fn overlaps(self, other: Self) -> bool {
        self.covers(other) || other.covers(self)
    }
}

/// Where a rule's events go. Queues, streams, functions taking an [`S3Event`] and channels
/// are targets already; a host implements it for anything else.
///
/// # Example
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use nimbus_sources::{EventTarget, InMemoryObjectStore, NotificationConfig, NotificationRule, ObjectEvent, ObjectStore, SourceError};
///
/// /// Keeps the keys of the objects it is told about.
/// #[derive(Debug, Default)]
/// struct Keys(Mutex<Vec<String>>);
///
/// impl EventTarget for Keys {
///     fn deliver(&self, event: &ObjectEvent) -> Result<(), SourceError> {
///         // Must not wait for the event to be handled: record it and return.
///         self.0.lock().map_err(|_| SourceError::Closed)?.push(event.key());
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let keys = Arc::new(Keys::default());
/// let rule = NotificationRule::new("uploads", &["s3:ObjectCreated:*"], keys.clone())?.with_prefix("inbox/");
/// let store = InMemoryObjectStore::new(NotificationConfig::new(vec![rule])?);
/// store.create_bucket("docs").await?;
/// store.put("docs", "inbox/q3 report.txt", "numbers".into()).await?;
/// store.put("docs", "archive/q2.txt", "older numbers".into()).await?;
/// assert_eq!(*keys.0.lock().unwrap(), ["inbox/q3 report.txt"]);
/// # Ok(())
/// # }
/// ```
pub trait EventTarget: Send + Sync + std::fmt::Debug + 'static {
    /// Delivers one event (without waiting for it to be handled).
    ///
    /// # Errors
    ///
    /// A [`SourceError`]; the change is notified again later (at least once).
    fn deliver(&self, event: &ObjectEvent) -> Result<(), SourceError>;
}

/// A queue target: the event as a JSON message body, `{"Records": [event]}`, as S3 sends.
impl EventTarget for InMemoryQueue {
    fn deliver(&self, event: &ObjectEvent) -> Result<(), SourceError> {
        let body = serde_json::to_vec(&S3Event::new(vec![event.clone()]))
            .map_err(|e| SourceError::Invalid(e.to_string()))?;
        self.send_message(Outgoing::new(body))
            .map(|_| ())
            .map_err(|e| e.error)
    }
}

/// A stream target: the event as a record keyed by bucket and key, so events of one object
/// stay in order.
impl EventTarget for InMemoryStream {
    fn deliver(&self, event: &ObjectEvent) -> Result<(), SourceError> {
        let body = serde_json::to_vec(&S3Event::new(vec![event.clone()]))
            .map_err(|e| SourceError::Invalid(e.to_string()))?;
        let key = format!("{}/{}", event.s3.bucket.name, event.s3.object.key);
        self.put(&key, body).map(|_| ())
    }
}

/// A function target: an asynchronous invocation with `{"Records": [event]}`, one event per
/// invocation, as S3 invokes Lambda.
impl EventTarget for nimbus_core::FunctionHandle<S3Event, ()> {
    fn deliver(&self, event: &ObjectEvent) -> Result<(), SourceError> {
        self.invoke_async(S3Event::new(vec![event.clone()]))
            .map(|_| ())
            .map_err(|rejected| SourceError::transient(rejected.to_string()))
    }
}

/// A channel target, for hosts that handle events themselves.
impl EventTarget for tokio::sync::mpsc::UnboundedSender<ObjectEvent> {
    fn deliver(&self, event: &ObjectEvent) -> Result<(), SourceError> {
        self.send(event.clone()).map_err(|_| SourceError::Closed)
    }
}

/// One rule: which events, which keys, where to.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NotificationRule {
    /// The rule's id (the events' `configurationId`).
    pub id: String,
    /// The event types it matches.
    pub events: Vec<EventType>,
    /// Keys must start with this.
    pub prefix: String,
    /// Keys must end with this.
    pub suffix: String,
    /// Where matching events go.
    pub target: Arc<dyn EventTarget>,
}

impl NotificationRule {
    /// A rule for these event types (e.g. `["s3:ObjectCreated:*"]`) sending to `target`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an unknown event type.
    pub fn new<S: AsRef<str>>(
        id: impl Into<String>,
        events: &[S],
        target: Arc<dyn EventTarget>,
    ) -> Result<Self, ConfigError> {
        let parsed = events
            .iter()
            .map(|e| {
                EventType::parse(e.as_ref()).ok_or_else(|| {
                    ConfigError::new(
                        "notification",
                        "events",
                        e.as_ref(),
                        "s3:ObjectCreated:*, s3:ObjectCreated:Put, s3:ObjectRemoved:*, s3:ObjectRemoved:Delete",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            id: id.into(),
            events: parsed,
            prefix: String::new(),
            suffix: String::new(),
            target,
        })
    }

    /// Only keys with this prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Only keys with this suffix.
    #[must_use]
    pub fn with_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = suffix.into();
        self
    }

    fn matches(&self, event: EventType, key: &str) -> bool {
        self.events.iter().any(|e| e.covers(event))
            && key.starts_with(&self.prefix)
            && key.ends_with(&self.suffix)
            && key.len() >= self.prefix.len() + self.suffix.len()
    }
}

/// A store's notification rules.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use nimbus_sources::{NotificationConfig, NotificationRule};
///
/// let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
/// let target = Arc::new(tx);
/// let images = NotificationRule::new("images", &["s3:ObjectCreated:*"], target.clone()).unwrap().with_prefix("images/");
/// let thumbs = NotificationRule::new("thumbs", &["s3:ObjectCreated:Put"], target).unwrap().with_prefix("images/thumbs/");
/// // Both match ObjectCreated:Put under images/thumbs/: rejected, as S3 rejects it.
/// assert!(NotificationConfig::new(vec![images, thumbs]).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct NotificationConfig {
    rules: Vec<NotificationRule>,
    region: String,
    account_id: String,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            region: aws::DEFAULT_REGION.to_owned(),
            account_id: aws::DEFAULT_ACCOUNT_ID.to_owned(),
        }
    }
}

impl NotificationConfig {
    /// Rules, checked for overlaps.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming two rules whose event types, prefixes and suffixes overlap, or
    /// a duplicate rule id.
    pub fn new(rules: Vec<NotificationRule>) -> Result<Self, ConfigError> {
        for (i, a) in rules.iter().enumerate() {
            for b in &rules[i + 1..] {
                if a.id == b.id {
                    return Err(ConfigError::new(
                        "notification",
                        "rules",
                        &a.id,
                        "unique rule ids",
                    ));
                }
                let events = a
                    .events
                    .iter()
                    .any(|x| b.events.iter().any(|y| x.overlaps(*y)));
                let prefixes = a.prefix.starts_with(&b.prefix) || b.prefix.starts_with(&a.prefix);
                let suffixes = a.suffix.ends_with(&b.suffix) || b.suffix.ends_with(&a.suffix);
                if events && prefixes && suffixes {
                    return Err(ConfigError::new(
                        "notification",
                        "rules",
                        format!("{} and {}", a.id, b.id),
                        "rules whose prefix or suffix filters do not overlap for the same event type",
                    ));
                }
            }
        }
        Ok(Self {
            rules,
            ..Self::default()
        })
    }

    /// The region events name (`awsRegion`; default `us-east-1`). Give it the runtime's
    /// (`RuntimeConfig::region`) so that events and ARNs agree.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if it does not look like a region name (`eu-west-1`).
    pub fn with_region(mut self, region: impl Into<String>) -> Result<Self, ConfigError> {
        let region = region.into();
        if !aws::is_region(&region) {
            return Err(ConfigError::new(
                "notification",
                "region",
                &region,
                "a region name such as us-east-1",
            ));
        }
        self.region = region;
        Ok(self)
    }

    /// The account events name as the writer and the bucket's owner (`principalId`; default
    /// twelve zeros).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] unless it is twelve digits.
    pub fn with_account_id(mut self, account_id: impl Into<String>) -> Result<Self, ConfigError> {
        let account_id = account_id.into();
        if !aws::is_account_id(&account_id) {
            return Err(ConfigError::new(
                "notification",
                "account_id",
                &account_id,
                "twelve digits",
            ));
        }
        self.account_id = account_id;
        Ok(self)
    }

    pub(crate) fn region(&self) -> &str {
        &self.region
    }

    pub(crate) fn account_id(&self) -> &str {
        &self.account_id
    }

    pub(crate) fn matching<'a>(
        &'a self,
        event: EventType,
        key: &'a str,
    ) -> impl Iterator<Item = &'a NotificationRule> + 'a {
        self.rules.iter().filter(move |r| r.matches(event, key))
    }
}
