//! Noticing changes: file-system events filtered and coalesced per object, a rescan against
//! the persisted index on start, and the notifications they produce.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use notify::EventKind;

use super::{Entry, Inner, META};
use crate::object::{etag, EventType, ObjectInfo};

/// Creations, changes, removals and finished writes; not reads (reading a file to notify it
/// would otherwise notify it again).
pub(super) fn relevant(kind: &EventKind) -> bool {
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
    pub(super) fn name_of(&self, path: &Path) -> Option<(String, String)> {
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
    pub(super) fn check(&self, path: &Path) {
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
    pub(super) fn notify(
        &self,
        event: EventType,
        info: &ObjectInfo,
        name: &str,
        entry: Option<Entry>,
    ) {
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
    pub(super) fn rescan(&self, root: &Path) {
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

    pub(super) fn persist(&self) {
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

pub(super) fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| crate::stream::stream_now())
}

/// Every file under `dir`, skipping the store's own folder.
pub(super) fn walk(dir: &Path) -> Vec<PathBuf> {
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
