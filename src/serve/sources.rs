//! Building sources and mappings: in-memory queues, and queue mappings over them or over a
//! Redis, PostgreSQL or NATS queue, attached to the runtime so that its shutdown stops them
//! first.

use std::collections::HashSet;
use std::sync::Arc;

use toml::Spanned;

use super::error::{Locator, ServeError};
use super::format::{BrokerSpec, MappingSpec, QueueSpec};
use super::functions::{config_message, seconds};
use crate::sources::{
    InMemoryQueue, QueueConfig, QueueFunction, QueueMapping, QueueMappingConfig, QueueSource,
};
use crate::Runtime;

/// An in-memory queue of the file.
#[derive(Debug)]
pub(crate) struct PreparedQueue {
    pub(crate) name: String,
    pub(crate) queue: Arc<InMemoryQueue>,
}

/// Where a mapping reads from.
#[derive(Debug, Clone)]
enum Source {
    Memory(String),
    Redis(BrokerSpec),
    Postgres(BrokerSpec),
    Nats(BrokerSpec),
}

/// A mapping checked against [`QueueMappingConfig::validate`], ready to start.
#[derive(Debug)]
pub(crate) struct PreparedMapping {
    pub(crate) name: String,
    pub(crate) function: String,
    source: Source,
    config: QueueMappingConfig,
    span: std::ops::Range<usize>,
}

pub(crate) fn prepare_queue(
    queue: &Spanned<QueueSpec>,
    locator: &Locator,
) -> Result<PreparedQueue, ServeError> {
    let spec = queue.get_ref();
    let span = queue.span();
    let mut config = QueueConfig::default();
    if let Some(timeout) = spec.visibility_timeout {
        config =
            config.with_visibility_timeout(seconds(timeout, "visibility_timeout", locator, &span)?);
    }
    if let Some(capacity) = spec.capacity {
        config = config.with_capacity(capacity);
    }
    let made = InMemoryQueue::new(config)
        .map_err(|e| locator.in_table(span.clone(), e.field, config_message(&e)))?;
    Ok(PreparedQueue {
        name: spec.name.get_ref().clone(),
        queue: Arc::new(made),
    })
}

pub(crate) fn prepare_mapping(
    mapping: &Spanned<MappingSpec>,
    queues: &HashSet<String>,
    locator: &Locator,
) -> Result<PreparedMapping, ServeError> {
    let spec = mapping.get_ref();
    let span = mapping.span();
    let mut sources = Vec::new();
    if let Some(queue) = &spec.queue {
        if !queues.contains(queue.get_ref()) {
            return Err(locator.at(
                queue.span(),
                "queue",
                format!(
                    "no queue named `{}` is declared in [[queues]]",
                    queue.get_ref()
                ),
            ));
        }
        sources.push(Source::Memory(queue.get_ref().clone()));
    }
    sources.extend(spec.redis.clone().map(Source::Redis));
    sources.extend(spec.postgres.clone().map(Source::Postgres));
    sources.extend(spec.nats.clone().map(Source::Nats));
    let source = match <[Source; 1]>::try_from(sources) {
        Ok([source]) => source,
        Err(_) => {
            return Err(locator.in_table(
                span,
                "queue",
                "a mapping names exactly one source: `queue`, `redis`, `postgres` or `nats`",
            ))
        }
    };
    let source_name = match &source {
        Source::Memory(name) => name.clone(),
        Source::Redis(b) | Source::Postgres(b) | Source::Nats(b) => b.name.clone(),
    };
    let function = spec.function.get_ref().clone();
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| format!("{function}-{source_name}"));
    let mut config = QueueMappingConfig::new(&name).with_queue_name(&source_name);
    if let Some(size) = spec.batch_size {
        config = config.with_batch_size(size);
    }
    if let Some(window) = spec.batching_window {
        config = config.with_batching_window(seconds(window, "batching_window", locator, &span)?);
    }
    if let Some(max) = spec.max_concurrency {
        // Scaling starts at the default (5) or at the maximum, whichever is smaller.
        let initial = config.initial_concurrency.min(max);
        config = config
            .with_max_concurrency(max)
            .with_initial_concurrency(initial);
    }
    if let Some(on) = spec.report_batch_item_failures {
        config = config.with_report_batch_item_failures(on);
    }
    for filter in &spec.filters {
        config = config.with_filter(filter.clone());
    }
    config.validate().map_err(|e| {
        // The file's spelling of the field the constructor names, and the field whose line
        // shows it.
        let (field, line_of) = match (e.field, &source, spec.name.is_some()) {
            // A name the file does not spell is made of the function's and the source's.
            ("name", _, false) => ("function", "function"),
            ("queue_name", Source::Memory(_), _) => ("queue", "queue"),
            ("queue_name", Source::Redis(_), _) => ("name", "redis"),
            ("queue_name", Source::Postgres(_), _) => ("name", "postgres"),
            ("queue_name", Source::Nats(_), _) => ("name", "nats"),
            (other, _, _) => (other, other),
        };
        let mut message = config_message(&e);
        if e.field == "name" && spec.name.is_none() {
            message
                .push_str(" (the mapping's name is `<function>-<source>` unless `name` sets it)");
        }
        let line = locator.field_line(span.clone(), line_of);
        locator.error(Some(line), field, message)
    })?;
    Ok(PreparedMapping {
        name,
        function,
        source,
        config,
        span,
    })
}

impl PreparedMapping {
    /// The in-memory queue it drains, if its source is one.
    pub(crate) fn memory_queue(&self) -> Option<&str> {
        match &self.source {
            Source::Memory(name) => Some(name),
            _ => None,
        }
    }

    /// Connects the source and starts the mapping, attached to `runtime`.
    pub(crate) async fn start(
        self,
        runtime: &Runtime,
        function: QueueFunction,
        queues: &[(String, Arc<InMemoryQueue>)],
        locator: &Locator,
    ) -> Result<QueueMapping, ServeError> {
        let span = self.span.clone();
        let broken = |field: &str, e: &dyn std::fmt::Display| {
            locator.in_table(span.clone(), field, format!("cannot connect: {e}"))
        };
        match &self.source {
            Source::Memory(name) => {
                let queue = queues
                    .iter()
                    .find(|(queue, _)| queue == name)
                    .map(|(_, queue)| Arc::clone(queue))
                    .ok_or_else(|| locator.in_table(span.clone(), "queue", "no such queue"))?;
                self.attach(runtime, queue, function, locator)
            }
            Source::Redis(b) => {
                let config = crate::redis::RedisConfig::new(&b.url, &b.name);
                let queue = crate::redis::RedisQueue::connect(config)
                    .await
                    .map_err(|e| broken("redis", &e))?;
                self.attach(runtime, queue, function, locator)
            }
            Source::Postgres(b) => {
                let config = crate::postgres::PostgresConfig::new(&b.url, &b.name);
                let queue = crate::postgres::PostgresQueue::connect(config)
                    .await
                    .map_err(|e| broken("postgres", &e))?;
                self.attach(runtime, queue, function, locator)
            }
            Source::Nats(b) => {
                let config = crate::nats::NatsConfig::new(&b.url, &b.name);
                let queue = crate::nats::NatsQueue::connect(config)
                    .await
                    .map_err(|e| broken("nats", &e))?;
                self.attach(runtime, queue, function, locator)
            }
        }
    }

    fn attach(
        &self,
        runtime: &Runtime,
        source: impl QueueSource,
        function: QueueFunction,
        locator: &Locator,
    ) -> Result<QueueMapping, ServeError> {
        QueueMapping::builder(source, function, self.config.clone())
            .attach(runtime)
            .start()
            .map_err(|e| locator.in_table(self.span.clone(), "function", e))
    }
}
