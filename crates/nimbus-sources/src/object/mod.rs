//! Object stores and their change notifications, with the shape and rules of S3 event
//! notifications: the [`ObjectStore`] trait, [`InMemoryObjectStore`], a local-directory store
//! (feature `directory`) that notices changes made by anything, notification rules with
//! prefix and suffix filters, and [`ObjectEvent`]s in S3's JSON shape, which a function
//! receives one at a time in an [`S3Event`] (`{"Records": [...]}`), as S3 invokes Lambda.
//!
//! # The classic loop
//!
//! A function triggered by new objects under a prefix that writes its output under the same
//! prefix triggers itself, forever. Write outputs under a prefix (or with a suffix) that the
//! rule excludes: for example read `inbox/*.txt` and write `summaries/*.json`. Rules whose
//! prefix and suffix filters overlap for the same event type are rejected, as S3 does.

#[cfg(feature = "directory")]
mod directory;
mod event;
mod memory;
mod rules;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[cfg(feature = "directory")]
pub use directory::{DirectoryConfig, DirectoryStore};
pub use event::{
    ObjectEvent, RequestParameters, ResponseElements, S3Bucket, S3Entity, S3Event, S3Object,
    UserIdentity,
};
pub use memory::InMemoryObjectStore;
pub use rules::{EventTarget, EventType, NotificationConfig, NotificationRule};

use crate::error::SourceError;

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// The bucket.
    pub bucket: String,
    /// The key (not encoded).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// A hash of the content, hex (S3's is an MD5; any stable content hash serves).
    pub etag: String,
    /// When it was last written.
    pub last_modified: SystemTime,
}

impl ObjectInfo {
    /// An object's facts, for stores built outside this crate.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use nimbus_sources::ObjectInfo;
    ///
    /// let info = ObjectInfo::new("photos", "cat.jpg", 4, "0c1f", SystemTime::now());
    /// assert_eq!((info.bucket.as_str(), info.key.as_str(), info.size), ("photos", "cat.jpg", 4));
    /// ```
    pub fn new(
        bucket: impl Into<String>,
        key: impl Into<String>,
        size: u64,
        etag: impl Into<String>,
        last_modified: SystemTime,
    ) -> Self {
        Self {
            bucket: bucket.into(),
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified,
        }
    }
}

/// A store of objects in buckets.
///
/// # Example
///
/// ```
/// use nimbus_sources::{InMemoryObjectStore, NotificationConfig, ObjectStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryObjectStore::new(NotificationConfig::default());
/// store.create_bucket("photos").await?;
/// let info = store.put("photos", "cat.jpg", "meow".into()).await?;
/// assert_eq!(info.size, 4);
/// assert_eq!(store.list("photos", "").await?.len(), 1);
/// # Ok(())
/// # }
/// ```
///
/// Implementing it: a store that refuses objects over a size limit and keeps the others in an
/// [`InMemoryObjectStore`] (so its notifications still fire). The `async_trait` attribute is
/// re-exported by this crate.
///
/// ```
/// use bytes::Bytes;
/// use nimbus_sources::{async_trait, InMemoryObjectStore, NotificationConfig, ObjectInfo, ObjectStore, SourceError};
///
/// #[derive(Debug)]
/// struct Capped {
///     inner: InMemoryObjectStore,
///     max_size: usize,
/// }
///
/// #[async_trait]
/// impl ObjectStore for Capped {
///     async fn create_bucket(&self, bucket: &str) -> Result<(), SourceError> {
///         self.inner.create_bucket(bucket).await
///     }
///     async fn put(&self, bucket: &str, key: &str, data: Bytes) -> Result<ObjectInfo, SourceError> {
///         if data.len() > self.max_size {
///             return Err(SourceError::Invalid(format!("{key} is over {} bytes", self.max_size)));
///         }
///         self.inner.put(bucket, key, data).await
///     }
///     async fn get(&self, bucket: &str, key: &str) -> Result<Option<(ObjectInfo, Bytes)>, SourceError> {
///         self.inner.get(bucket, key).await
///     }
///     async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, SourceError> {
///         self.inner.head(bucket, key).await
///     }
///     async fn delete(&self, bucket: &str, key: &str) -> Result<bool, SourceError> {
///         self.inner.delete(bucket, key).await
///     }
///     async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, SourceError> {
///         self.inner.list(bucket, prefix).await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Capped { inner: InMemoryObjectStore::new(NotificationConfig::default()), max_size: 8 };
/// store.create_bucket("photos").await?;
/// store.put("photos", "cat.jpg", "meow".into()).await?;
/// let refused = store.put("photos", "whale.jpg", vec![0u8; 9].into()).await;
/// assert!(matches!(refused, Err(SourceError::Invalid(_))));
/// assert_eq!(store.head("photos", "whale.jpg").await?, None);
/// assert_eq!(store.list("photos", "").await?.len(), 1);
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Creates a bucket (no error if it exists).
    ///
    /// # Errors
    ///
    /// An invalid name or a storage error.
    async fn create_bucket(&self, bucket: &str) -> Result<(), SourceError>;

    /// Writes an object, replacing any with the same key.
    ///
    /// # Errors
    ///
    /// An unknown bucket, an invalid key or a storage error.
    async fn put(&self, bucket: &str, key: &str, data: Bytes) -> Result<ObjectInfo, SourceError>;

    /// Reads an object.
    ///
    /// # Errors
    ///
    /// An unknown bucket or a storage error.
    async fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectInfo, Bytes)>, SourceError>;

    /// An object's metadata.
    ///
    /// # Errors
    ///
    /// An unknown bucket or a storage error.
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, SourceError>;

    /// Deletes an object; returns whether it existed.
    ///
    /// # Errors
    ///
    /// An unknown bucket or a storage error.
    async fn delete(&self, bucket: &str, key: &str) -> Result<bool, SourceError>;

    /// Objects whose key starts with `prefix`, sorted by key.
    ///
    /// # Errors
    ///
    /// An unknown bucket or a storage error.
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, SourceError>;
}

/// Encodes a key as S3 does in notifications: unreserved characters and `/` stay, a space
/// becomes `+`, every other byte `%XX`.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes [`encode_key`]'s form (invalid escapes are kept as they are).
pub fn decode_key(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            out.push(b' ');
            i += 1;
            continue;
        }
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let escaped = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(value) = escaped {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A content hash for etags: 128 bits as 32 hex digits.
pub(crate) fn etag(data: &[u8]) -> String {
    // Reuse the stream's key hash over the bytes, as text when possible.
    let text = String::from_utf8_lossy(data);
    format!(
        "{:032x}",
        crate::stream::hash_key(&text) ^ (data.len() as u128)
    )
}

/// Publishes events for a store: matches rules, orders events per key, delivers to targets.
#[derive(Debug)]
pub(crate) struct Notifier {
    config: NotificationConfig,
    sequencer: AtomicU64,
}

impl Notifier {
    pub(crate) fn new(config: NotificationConfig) -> Self {
        Self {
            config,
            // Start from the clock, so sequencers keep growing across restarts.
            sequencer: AtomicU64::new(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(1),
            ),
        }
    }

    /// Delivers the event of one change to every matching rule's target.
    ///
    /// # Errors
    ///
    /// The first target that refused; the caller keeps the change un-indexed so it is
    /// notified again (at least once).
    pub(crate) fn publish(
        &self,
        event_type: EventType,
        info: &ObjectInfo,
    ) -> Result<usize, SourceError> {
        let sequencer = format!("{:016X}", self.sequencer.fetch_add(1, Ordering::Relaxed));
        let mut delivered = 0;
        for rule in self.config.matching(event_type, &info.key) {
            let event = ObjectEvent::new(
                &self.config,
                event_type,
                &rule.id,
                info,
                &sequencer,
                stream_time(),
            );
            rule.target.deliver(&event)?;
            delivered += 1;
        }
        Ok(delivered)
    }
}

fn stream_time() -> SystemTime {
    crate::stream::stream_now()
}
