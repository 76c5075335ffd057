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
use notify::{EventKind, RecursiveMode, Watcher};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::memory::{check_bucket, check_key};
use super::{etag, EventType, NotificationConfig, Notifier, ObjectInfo, ObjectStore};
use crate::error::{ConfigError, SourceError};

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

/// Runs blocking file I/O on Tokio's blocking pool, off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(SourceError::transient(format!("file I/O task failed: {e}"))))
}

/// Creations, changes, removals and finished writes; not reads (reading a file to notify it
/// would otherwise notify it again).
fn relevant(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Access(notify::event::AccessKind::Close(
                notify::event::AccessMode::Write
            ))
    )
}

impl Inner {
    /// "bucket/key" of a path under the root, if it is inside a bucket.
    fn name_of(&self, path: &Path) -> Option<(String, String)> {
        let relative = path.strip_prefix(&self.root).ok()?;
        let mut parts = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let bucket = parts.next()?;
        if bucket == META {
            return None;
        }
        let key: Vec<String> = parts.collect();
        (!key.is_empty()).then(|| (bucket, key.join("/")))
    }

    /// Compares one path (file or directory) with the index and notifies what changed.
    fn check(&self, path: &Path) {
        if path.is_dir() {
            for file in walk(path) {
                self.check(&file);
            }
            return;
        }
        let Some((bucket, key)) = self.name_of(path) else {
            return;
        };
        let name = format!("{bucket}/{key}");
        match std::fs::read(path) {
            Ok(data) => {
                let entry = Entry {
                    size: data.len() as u64,
                    etag: etag(&data),
                };
                if self.index.lock().get(&name) == Some(&entry) {
                    return;
                }
                let info = ObjectInfo {
                    bucket,
                    key,
                    size: entry.size,
                    etag: entry.etag.clone(),
                    last_modified: modified(path),
                };
                self.notify(EventType::CreatedPut, &info, &name, Some(entry));
            }
            Err(_) => {
                // Gone: the file, or a whole directory of files.
                let gone: Vec<String> = {
                    let index = self.index.lock();
                    let dir = format!("{name}/");
                    index
                        .keys()
                        .filter(|k| **k == name || k.starts_with(&dir))
                        .cloned()
                        .collect()
                };
                for name in gone {
                    // Whoever removed it, its cached etag goes too.
                    self.etags.lock().remove(&name);
                    if let Some((bucket, key)) = name.split_once('/') {
                        let info = ObjectInfo {
                            bucket: bucket.to_owned(),
                            key: key.to_owned(),
                            size: 0,
                            etag: String::new(),
                            last_modified: crate::stream::stream_now(),
                        };
                        self.notify(EventType::RemovedDelete, &info, &name, None);
                    }
                }
            }
        }
    }

    /// Notifies, then records the change in the index. A refused delivery leaves the index
    /// as it was, so the change is notified again on the next event or restart.
    fn notify(&self, event: EventType, info: &ObjectInfo, name: &str, entry: Option<Entry>) {
        match self.notifier.publish(event, info) {
            Ok(_) => {
                let mut index = self.index.lock();
                match entry {
                    Some(entry) => index.insert(name.to_owned(), entry),
                    None => index.remove(name),
                };
            }
            Err(error) => tracing::warn!(%name, %error, "notification refused; it will be retried"),
        }
    }

    /// Notifies every difference between the directory and the index.
    fn rescan(&self, root: &Path) {
        let mut seen = std::collections::HashSet::new();
        for file in walk(root) {
            if let Some((bucket, key)) = self.name_of(&file) {
                seen.insert(format!("{bucket}/{key}"));
                self.check(&file);
            }
        }
        let missing: Vec<String> = self
            .index
            .lock()
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for name in missing {
            self.check(&self.root.join(&name));
        }
    }

    fn persist(&self) {
        let bytes = match serde_json::to_vec(&*self.index.lock()) {
            Ok(bytes) => bytes,
            Err(_) => return,
        };
        let meta = self.root.join(META);
        let tmp = meta.join(format!("index.{:016x}.tmp", fastrand::u64(..)));
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, meta.join("index.json"));
        }
    }
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| crate::stream::stream_now())
}

/// Every file under `dir`, skipping the store's own folder.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == META) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

impl Inner {
    /// The path of an object, once both names are checked (so it is under the root).
    fn path_of(&self, bucket: &str, key: &str) -> Result<PathBuf, SourceError> {
        check_bucket(bucket)?;
        check_key(key)?;
        Ok(self.root.join(bucket).join(key))
    }

    /// Metadata of an object's file, with its etag: cached for this size and modification
    /// time, or computed from `data` (read if not given) and cached.
    fn info(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        data: Option<&[u8]>,
    ) -> std::io::Result<ObjectInfo> {
        let meta = std::fs::metadata(path)?;
        if meta.is_dir() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        let modified = meta
            .modified()
            .unwrap_or_else(|_| crate::stream::stream_now());
        let name = format!("{bucket}/{key}");
        let cached = self
            .etags
            .lock()
            .get(&name)
            .filter(|(size, at, _)| *size == meta.len() && *at == modified)
            .map(|(_, _, etag)| etag.clone());
        let etag = match (cached, data) {
            (Some(etag), _) => etag,
            (None, Some(data)) if data.len() as u64 == meta.len() => etag(data),
            (None, _) => etag(&std::fs::read(path)?),
        };
        self.etags
            .lock()
            .insert(name, (meta.len(), modified, etag.clone()));
        Ok(ObjectInfo {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: meta.len(),
            etag,
            last_modified: modified,
        })
    }

    fn put(&self, bucket: &str, key: &str, data: &[u8]) -> Result<ObjectInfo, SourceError> {
        let path = self.path_of(bucket, key)?;
        if !self.root.join(bucket).is_dir() {
            return Err(SourceError::Invalid(format!("no bucket {bucket}")));
        }
        let io = |e: std::io::Error| SourceError::transient(format!("{}: {e}", path.display()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        // Write aside and rename, so that no reader (nor the watcher) sees half a file.
        let tmp = self
            .root
            .join(META)
            .join(format!("put.{:016x}.tmp", fastrand::u64(..)));
        std::fs::write(&tmp, data).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        let info = self.info(bucket, key, &path, Some(data)).map_err(io)?;
        let entry = Entry {
            size: info.size,
            etag: info.etag.clone(),
        };
        let name = format!("{bucket}/{key}");
        if self.index.lock().get(&name) != Some(&entry) {
            self.notify(EventType::CreatedPut, &info, &name, Some(entry));
            self.persist();
        }
        Ok(info)
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Option<(ObjectInfo, Bytes)>, SourceError> {
        let path = self.path_of(bucket, key)?;
        let data = match std::fs::read(&path) {
            Ok(data) => data,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(SourceError::transient(e.to_string())),
        };
        match self.info(bucket, key, &path, Some(&data)) {
            Ok(info) => Ok(Some((info, Bytes::from(data)))),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(SourceError::transient(e.to_string())),
        }
    }

    fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, SourceError> {
        let path = self.path_of(bucket, key)?;
        match self.info(bucket, key, &path, None) {
            Ok(info) => Ok(Some(info)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(SourceError::transient(e.to_string())),
        }
    }

    fn delete(&self, bucket: &str, key: &str) -> Result<bool, SourceError> {
        let path = self.path_of(bucket, key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.etags.lock().remove(&format!("{bucket}/{key}"));
                self.check(&path);
                self.persist();
                Ok(true)
            }
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(SourceError::transient(e.to_string())),
        }
    }

    fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, SourceError> {
        check_bucket(bucket)?;
        let dir = self.root.join(bucket);
        if !dir.is_dir() {
            return Err(SourceError::Invalid(format!("no bucket {bucket}")));
        }
        let mut out = Vec::new();
        for file in walk(&dir) {
            if let Some((b, key)) = self.name_of(&file) {
                if b == bucket && key.starts_with(prefix) {
                    if let Some(info) = self.head(bucket, &key)? {
                        out.push(info);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// A file that is not there (or is a directory where a file was expected).
fn is_absent(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
    )
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
        blocking(move || inner.put(&bucket, &key, &data)).await
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
        blocking(move || inner.delete(&bucket, &key)).await
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
