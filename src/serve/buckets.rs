//! Object buckets from the file: a directory object store per `[[buckets]]`, watched, whose
//! notification rules invoke functions asynchronously with S3's event, as S3 invokes Lambda.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nimbus_sources::{
    DirectoryConfig, DirectoryStore, EventTarget, NotificationConfig, NotificationRule,
    ObjectEvent, ObjectStore, S3Event, SourceError,
};
use toml::Spanned;

use super::error::{Locator, ServeError};
use super::format::BucketSpec;
use super::functions::{config_message, seconds};
use crate::Runtime;

/// A bucket checked (its rules built and checked for overlaps), ready to open.
#[derive(Debug)]
pub(crate) struct PreparedBucket {
    pub(crate) name: String,
    root: PathBuf,
    settle: Option<Duration>,
    notifications: NotificationConfig,
    span: std::ops::Range<usize>,
}

/// Invokes a function of the runtime, once the runtime exists, with each event of one bucket.
#[derive(Debug)]
struct FunctionTarget {
    runtime: Arc<OnceLock<Runtime>>,
    bucket: String,
    function: String,
}

impl EventTarget for FunctionTarget {
    fn deliver(&self, event: &ObjectEvent) -> Result<(), SourceError> {
        // A store watches its whole root: only this bucket's objects are its events.
        if event.bucket() != self.bucket {
            return Ok(());
        }
        let runtime = self.runtime.get().ok_or(SourceError::Closed)?;
        let message = serde_json::to_value(S3Event::new(vec![event.clone()]))
            .map_err(|e| SourceError::Invalid(e.to_string()))?;
        runtime
            .invoke_async_json(&self.function, message)
            .map(|_| ())
            .map_err(|rejected| SourceError::transient(rejected.to_string()))
    }
}

/// Checks a `[[buckets]]` table: its settle time, and each rule's events and overlaps.
/// `runtime` is set when the file starts; events before that are notified again later.
pub(crate) fn prepare_bucket(
    bucket: &Spanned<BucketSpec>,
    base: &Path,
    runtime: &Arc<OnceLock<Runtime>>,
    locator: &Locator,
) -> Result<PreparedBucket, ServeError> {
    let spec = bucket.get_ref();
    let span = bucket.span();
    let name = spec.name.get_ref();
    if !valid_bucket_name(name) {
        return Err(locator.at(
            spec.name.span(),
            "name",
            format!("`{name}` is not a bucket name: allowed 3 to 63 of [a-z0-9.-], starting and ending with a letter or digit, no `..`"),
        ));
    }
    if spec.directory.get_ref().is_empty() {
        return Err(locator.at(spec.directory.span(), "directory", "an empty path"));
    }
    let settle = spec
        .settle
        .map(|s| seconds(s, "settle", locator, &span))
        .transpose()?;
    let mut rules = Vec::new();
    for (index, rule) in spec.notifications.iter().enumerate() {
        let rule_span = rule.span();
        let rule = rule.get_ref();
        let id = rule
            .id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", rule.function.get_ref(), index + 1));
        let target = Arc::new(FunctionTarget {
            runtime: Arc::clone(runtime),
            bucket: name.clone(),
            function: rule.function.get_ref().clone(),
        });
        let made = NotificationRule::new(id, &rule.events, target)
            .map_err(|e| locator.in_table(rule_span.clone(), e.field, config_message(&e)))?;
        rules.push(
            made.with_prefix(rule.prefix.clone())
                .with_suffix(rule.suffix.clone()),
        );
    }
    let notifications = NotificationConfig::new(rules).map_err(|e| {
        let line = spec
            .notifications
            .last()
            .map_or(span.clone(), Spanned::span);
        locator.in_table(line, e.field, config_message(&e))
    })?;
    Ok(PreparedBucket {
        name: name.clone(),
        root: base.join(spec.directory.get_ref()),
        settle,
        notifications,
        span,
    })
}

impl PreparedBucket {
    /// The store's root (the bucket is its sub-folder `name`).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Opens the store, creates the bucket and starts watching.
    pub(crate) async fn open(self, locator: &Locator) -> Result<DirectoryStore, ServeError> {
        let mut config = DirectoryConfig::new(&self.root, self.notifications);
        if let Some(settle) = self.settle {
            config = config.with_settle(settle);
        }
        let failed = |e: SourceError| {
            locator.in_table(
                self.span.clone(),
                "directory",
                format!("cannot open {}: {e}", self.root.display()),
            )
        };
        let store = DirectoryStore::open(config).await.map_err(failed)?;
        store.create_bucket(&self.name).await.map_err(failed)?;
        Ok(store)
    }
}

/// S3's rule, as the stores check it: 3 to 63 lowercase letters, digits, dots and hyphens,
/// starting and ending with a letter or digit, no `..`.
fn valid_bucket_name(name: &str) -> bool {
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && edge(name.bytes().next())
        && edge(name.bytes().last())
        && !name.contains("..")
}
