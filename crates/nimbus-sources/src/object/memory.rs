//! The in-memory object store.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use super::{etag, EventType, NotificationConfig, Notifier, ObjectInfo, ObjectStore};
use crate::error::SourceError;

/// One bucket's objects by key.
type Bucket = BTreeMap<String, (ObjectInfo, Bytes)>;

/// Objects in memory, with notifications.
#[derive(Debug)]
pub struct InMemoryObjectStore {
    buckets: Mutex<HashMap<String, Bucket>>,
    notifier: Notifier,
}

impl InMemoryObjectStore {
    /// An empty store with these notification rules.
    pub fn new(notifications: NotificationConfig) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            notifier: Notifier::new(notifications),
        }
    }
}

/// Checks an object key as S3 does, and so that no key can name a path outside its bucket:
/// 1 to 1,024 bytes of UTF-8, no NUL, no leading `/`, no path component that is `.` or `..`.
pub(crate) fn check_key(key: &str) -> Result<(), SourceError> {
    let ok = (1..=1_024).contains(&key.len())
        && !key.starts_with('/')
        && !key.contains('\0')
        && !key.split('/').any(|p| p == ".." || p == ".");
    if ok {
        Ok(())
    } else {
        Err(SourceError::Invalid(format!(
            "invalid object key {key:?} (1-1024 bytes, no NUL, no leading '/', no '.' or '..' component)"
        )))
    }
}

/// Checks a bucket name as S3 does: 3 to 63 characters of lowercase letters, digits, dots and
/// hyphens, starting and ending with a letter or digit, without `..`. So no bucket name can
/// be a path (`..`, `a/b`) that leaves a store's root.
pub(crate) fn check_bucket(bucket: &str) -> Result<(), SourceError> {
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && edge(bucket.bytes().next())
        && edge(bucket.bytes().last())
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(SourceError::Invalid(format!(
            "invalid bucket name {bucket:?} (3-63 of a-z 0-9 . -, starting and ending with a letter or digit, no '..')"
        )))
    }
}

#[async_trait]
impl ObjectStore for InMemoryObjectStore {
    async fn create_bucket(&self, bucket: &str) -> Result<(), SourceError> {
        check_bucket(bucket)?;
        self.buckets.lock().entry(bucket.to_owned()).or_default();
        Ok(())
    }

    async fn put(&self, bucket: &str, key: &str, data: Bytes) -> Result<ObjectInfo, SourceError> {
        check_bucket(bucket)?;
        check_key(key)?;
        let info = ObjectInfo {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: data.len() as u64,
            etag: etag(&data),
            last_modified: crate::stream::stream_now(),
        };
        {
            let mut buckets = self.buckets.lock();
            let objects = buckets
                .get_mut(bucket)
                .ok_or_else(|| SourceError::Invalid(format!("no bucket {bucket}")))?;
            objects.insert(key.to_owned(), (info.clone(), data));
        }
        self.notifier.publish(EventType::CreatedPut, &info)?;
        Ok(info)
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectInfo, Bytes)>, SourceError> {
        check_bucket(bucket)?;
        check_key(key)?;
        let buckets = self.buckets.lock();
        let objects = buckets
            .get(bucket)
            .ok_or_else(|| SourceError::Invalid(format!("no bucket {bucket}")))?;
        Ok(objects.get(key).cloned())
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, SourceError> {
        Ok(self.get(bucket, key).await?.map(|(info, _)| info))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<bool, SourceError> {
        check_bucket(bucket)?;
        check_key(key)?;
        let removed = {
            let mut buckets = self.buckets.lock();
            let objects = buckets
                .get_mut(bucket)
                .ok_or_else(|| SourceError::Invalid(format!("no bucket {bucket}")))?;
            objects.remove(key)
        };
        match removed {
            Some((mut info, _)) => {
                info.size = 0;
                info.etag.clear();
                self.notifier.publish(EventType::RemovedDelete, &info)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, SourceError> {
        check_bucket(bucket)?;
        let buckets = self.buckets.lock();
        let objects = buckets
            .get(bucket)
            .ok_or_else(|| SourceError::Invalid(format!("no bucket {bucket}")))?;
        Ok(objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, (info, _))| info.clone())
            .collect())
    }
}
