//! The local-directory object store: a bucket is a directory under a root, an object is a
//! file. It notices changes made by anything (a user copying a file in, another process),
//! through the file system's own events (the `notify` crate), coalesces the burst of events
//! one write produces, and on start rescans against a small persisted index so that changes
//! made while the host was down are notified, and nothing already notified is notified again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use nimbus_core::handler::hops;
use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::memory::check_bucket;
use super::{NotificationConfig, Notifier, ObjectInfo, ObjectStore};
use crate::error::{ConfigError, SourceError};
use watch::relevant;

mod files;
mod watch;

/// The folder under the root where the store keeps its index and temporary files.
const META: &str = ".nimbus";

/// Configuration of a [`DirectoryStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DirectoryConfig {
    /// The root directory; each bucket is a directory in it.
    pub root: PathBuf,
    /// Quiet time after a file's last event before it is read and notified (0 s..=10 min,
    /// default 200 ms): one write that produces dozens of events gives one notification.
    pub settle: Duration,
    /// The notification rules.
    pub notifications: NotificationConfig,
}

impl DirectoryConfig {
    /// A store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>, notifications: NotificationConfig) -> Self {
        Self {
            root: root.into(),
            settle: Duration::from_millis(200),
            notifications,
        }
    }

    /// Sets the settle time.
    #[must_use]
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    size: u64,
    etag: String,
}

struct Inner {
    root: PathBuf,
    notifier: Notifier,
    /// "bucket/key" -> what was last notified.
    index: Mutex<BTreeMap<String, Entry>>,
    /// "bucket/key" -> the etag of the file as it was at (size, modification time). `head`
    /// answers from file metadata; the etag is a hash of the content, so it is computed once
    /// per version of a file (on put, or on the first head or get that sees it) and kept here,
    /// rather than reading the whole file on every head. The notification index is not used
    /// for this: it holds what was last *notified*, which lags a file changed by another
    /// process until its events settle.
    etags: Mutex<HashMap<String, (u64, SystemTime, String)>>,
}

/// A directory of buckets, watched for changes.
pub struct DirectoryStore {
    inner: Arc<Inner>,
    stop: CancellationToken,
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for DirectoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl Drop for DirectoryStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl DirectoryStore {
    /// Opens (creating if needed) the store, notifies what changed since it was last open, and
    /// starts watching. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// The root cannot be created or watched.
    pub async fn open(config: DirectoryConfig) -> Result<Self, SourceError> {
        if config.settle > MAX_SETTLE {
            let error = ConfigError::new("directory store", "settle", config.settle, "0s..=10min");
            return Err(SourceError::Invalid(error.to_string()));
        }
        let (root, notifications) = (config.root.clone(), config.notifications);
        let inner = blocking(move || {
            let io = |e: std::io::Error| SourceError::transient(format!("{}: {e}", root.display()));
            std::fs::create_dir_all(root.join(META)).map_err(io)?;
            let root = root.canonicalize().map_err(io)?;
            let index = std::fs::read(root.join(META).join("index.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or_default();
            let inner = Arc::new(Inner {
                root: root.clone(),
                notifier: Notifier::new(notifications),
                index: Mutex::new(index),
                etags: Mutex::new(HashMap::new()),
            });
            inner.rescan(&root);
            inner.persist();
            Ok(inner)
        })
        .await?;
        let root = inner.root.clone();

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<notify::Event>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    let _ = tx.send(event);
                }
            })
            .map_err(|e| SourceError::transient(format!("cannot watch {}: {e}", root.display())))?;
        watcher
            .watch(&root, RecursiveMode::Recursive)
            .map_err(|e| SourceError::transient(format!("cannot watch {}: {e}", root.display())))?;

        let stop = CancellationToken::new();
        let settle = config.settle;
        tokio::spawn({
            let (inner, stop) = (Arc::clone(&inner), stop.clone());
            async move {
                // Paths with events, and when they will have been quiet for `settle`.
                let mut pending: HashMap<PathBuf, tokio::time::Instant> = HashMap::new();
                loop {
                    let next = pending.values().min().copied();
                    tokio::select! {
                        event = rx.recv() => {
                            let Some(event) = event else { return };
                            if !relevant(&event.kind) {
                                continue;
                            }
                            for path in event.paths {
                                if !path.starts_with(inner.root.join(META)) {
                                    // `settle` is at most ten minutes (checked at open).
                                    pending.insert(path, tokio::time::Instant::now() + settle);
                                }
                            }
                        }
                        () = async {
                            match next {
                                Some(at) => tokio::time::sleep_until(at).await,
                                None => std::future::pending().await,
                            }
                        } => {
                            let now = tokio::time::Instant::now();
                            let due: Vec<PathBuf> = pending.iter().filter(|(_, at)| **at <= now).map(|(p, _)| p.clone()).collect();
                            for path in &due {
                                pending.remove(path);
                            }
                            let inner = Arc::clone(&inner);
                            let _ = tokio::task::spawn_blocking(move || {
                                for path in due {
                                    inner.check(&path);
                                }
                                inner.persist();
                            })
                            .await;
                        }
                        () = stop.cancelled() => return,
                    }
                }
            }
        });
        Ok(Self {
            inner,
            stop,
            _watcher: watcher,
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }
}

/// The longest settle time a [`DirectoryConfig`] may have.
const MAX_SETTLE: Duration = Duration::from_secs(600);

/// Runs `f` as the work of the invocation with hop count `running`, if there was one.
fn as_invocation<R>(running: Option<u32>, f: impl FnOnce() -> R) -> R {
    match running {
        Some(count) => hops::sync_scope(count, f),
        None => f(),
    }
}

/// Runs blocking file I/O on Tokio's blocking pool, off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(SourceError::transient(format!("file I/O task failed: {e}"))))
}

#[async_trait]
impl ObjectStore for DirectoryStore {
    async fn create_bucket(&self, bucket: &str) -> Result<(), SourceError> {
        check_bucket(bucket)?;
        let dir = self.inner.root.join(bucket);
        blocking(move || {
            std::fs::create_dir_all(dir).map_err(|e| SourceError::transient(e.to_string()))
        })
        .await
    }

    async fn put(&self, bucket: &str, key: &str, data: Bytes) -> Result<ObjectInfo, SourceError> {
        let (inner, bucket, key) = (Arc::clone(&self.inner), bucket.to_owned(), key.to_owned());
        // Notified by the put itself, on a blocking thread: the hop count of the invocation
        // writing goes with it (see `nimbus_core::handler::hops`).
        let running = hops::current();
        blocking(move || as_invocation(running, || inner.put(&bucket, &key, &data))).await
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectInfo, Bytes)>, SourceError> {
        let (inner, bucket, key) = (Arc::clone(&self.inner), bucket.to_owned(), key.to_owned());
        blocking(move || inner.get(&bucket, &key)).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, SourceError> {
        let (inner, bucket, key) = (Arc::clone(&self.inner), bucket.to_owned(), key.to_owned());
        blocking(move || inner.head(&bucket, &key)).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<bool, SourceError> {
        let (inner, bucket, key) = (Arc::clone(&self.inner), bucket.to_owned(), key.to_owned());
        let running = hops::current();
        blocking(move || as_invocation(running, || inner.delete(&bucket, &key))).await
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, SourceError> {
        let (inner, bucket, prefix) = (
            Arc::clone(&self.inner),
            bucket.to_owned(),
            prefix.to_owned(),
        );
        blocking(move || inner.list(&bucket, &prefix)).await
    }
}
