//! Object operations on files: names checked before they become paths, etags cached per
//! version of a file, writes made atomic through a temporary file.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::watch::walk;
use super::{Entry, Inner, META};
use crate::error::SourceError;
use crate::object::memory::{check_bucket, check_key};
use crate::object::{etag, EventType, ObjectInfo};

impl Inner {
    /// The path of an object, once both names are checked (so it is under the root).
    pub(super) fn path_of(&self, bucket: &str, key: &str) -> Result<PathBuf, SourceError> {
        check_bucket(bucket)?;
        check_key(key)?;
        Ok(self.root.join(bucket).join(key))
    }

    /// Metadata of an object's file, with its etag: cached for this size and modification
    /// time, or computed from `data` (read if not given) and cached.
    pub(super) fn info(
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

    pub(super) fn put(
        &self,
        bucket: &str,
        key: &str,
        data: &[u8],
    ) -> Result<ObjectInfo, SourceError> {
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

    pub(super) fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(ObjectInfo, Bytes)>, SourceError> {
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

    pub(super) fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectInfo>, SourceError> {
        let path = self.path_of(bucket, key)?;
        match self.info(bucket, key, &path, None) {
            Ok(info) => Ok(Some(info)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(SourceError::transient(e.to_string())),
        }
    }

    pub(super) fn delete(&self, bucket: &str, key: &str) -> Result<bool, SourceError> {
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

    pub(super) fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, SourceError> {
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
