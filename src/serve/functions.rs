//! Building functions: a process instance from `command`, or the host's function for a name
//! declared without one; the file's settings, async settings and destinations applied to
//! either.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nimbus_sources::{BatchResponse, InMemoryQueue, QueueBatch};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use toml::Spanned;

use super::destinations::{FunctionDestination, QueueDestination};
use super::error::{Locator, ServeError};
use super::format::{DestinationSpec, FunctionSpec};
use crate::permission::{parse_policy_document, ExecutionRole};
use crate::process::{Layer, LogTails, ProcessBackend, ProcessConfig};
use crate::sources::QueueFunction;
use crate::{ConfigError, Function, FunctionConfig, Runtime};

/// A function the host application provides for a name the file declares without `command`.
#[derive(Debug)]
pub(crate) enum HostFunction {
    /// Takes and returns JSON (routes, the Invoke API, destinations).
    Json(Function<Value, Value>),
    /// Takes a queue mapping's batches.
    Queue(Function<QueueBatch, BatchResponse>),
}

/// What a function is invoked with, decided by what the file points at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// JSON events: routes, the Invoke API, destinations.
    Json,
    /// Queue batches: the target of a mapping.
    Queue,
}

/// A function checked against the existing constructors, ready to register.
#[derive(Debug)]
pub(crate) struct PreparedFunction {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    spec: FunctionSpec,
    span: std::ops::Range<usize>,
    process: Option<ProcessConfig>,
}

/// A registered function: its queue handle (for mappings) and its log tails (for the Invoke
/// API's `X-Amz-Log-Type: Tail`).
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) name: String,
    pub(crate) queue_handle: Option<QueueFunction>,
    pub(crate) logs: Option<LogTails>,
}

impl PreparedFunction {
    pub(crate) fn prepare(
        function: &Spanned<FunctionSpec>,
        kind: Kind,
        base: &Path,
        locator: &Locator,
    ) -> Result<Self, ServeError> {
        let spec = function.get_ref().clone();
        let span = function.span();
        let invalid = |e: ConfigError| locator.in_table(span.clone(), e.field, config_message(&e));
        // The values go through the runtime's own checks, whichever kind of function it is.
        settings(&spec, FunctionConfig::default(), locator, &span)?
            .validate()
            .map_err(invalid)?;
        let process = match &spec.command {
            None => None,
            Some(command) => {
                let mut config = ProcessConfig::new(resolve_program(base, command))
                    .with_args(spec.args.iter().cloned());
                if let Some(dir) = &spec.working_dir {
                    config = config.with_working_dir(base.join(dir));
                }
                if let Some(handler) = &spec.handler {
                    config = config.with_handler(handler.clone());
                }
                if spec.handler_as_argument {
                    config = config.with_handler_as_argument();
                }
                for (key, value) in &spec.env {
                    config = config.with_env(key.clone(), value.clone());
                }
                for layer in &spec.layers {
                    let path = base.join(&layer.path);
                    let made = if path.extension().is_some_and(|e| e == "zip") {
                        Layer::archive(&layer.name, layer.version, &path)
                    } else {
                        Layer::directory(&layer.name, layer.version, &path)
                    };
                    config = config.with_layer(made.map_err(|e| {
                        locator.in_table(span.clone(), "layers", config_message(&e))
                    })?);
                }
                config.validate().map_err(|e| {
                    let field = match e.field {
                        "program" => "command",
                        other => other,
                    };
                    locator.in_table(span.clone(), field, config_message(&e))
                })?;
                Some(config)
            }
        };
        Ok(Self {
            name: spec.name.get_ref().clone(),
            kind,
            spec,
            span,
            process,
        })
    }

    /// Registers the function: a process backend, or the host's function for this name.
    pub(crate) async fn register(
        self,
        runtime: &Runtime,
        host: Option<HostFunction>,
        queues: &[(String, Arc<InMemoryQueue>)],
        locator: &Locator,
    ) -> Result<Registered, ServeError> {
        let failed = |e: crate::RegisterError| locator.in_table(self.span.clone(), "name", e);
        let mut registered = Registered {
            name: self.name.clone(),
            queue_handle: None,
            logs: None,
        };
        match (self.process.clone(), host, self.kind) {
            (Some(_), Some(_), _) => {
                return Err(locator.in_table(
                    self.span.clone(),
                    "command",
                    format!(
                        "`{}` has a command and is also provided by the host",
                        self.name
                    ),
                ))
            }
            (None, None, _) => {
                return Err(locator.in_table(
                    self.span.clone(),
                    "name",
                    format!(
                        "`{}` has no `command`, and the host application provides no function \
                         of this name",
                        self.name
                    ),
                ))
            }
            (Some(process), None, Kind::Json) => {
                let backend = self.backend::<Value, Value>(process, locator)?;
                registered.logs = Some(backend.log_tails());
                let function = self.apply(backend.into_function(&self.name), runtime, queues)?;
                runtime.register(function).await.map_err(failed)?;
            }
            (Some(process), None, Kind::Queue) => {
                let backend = self.backend::<QueueBatch, BatchResponse>(process, locator)?;
                registered.logs = Some(backend.log_tails());
                let function = self.apply(backend.into_function(&self.name), runtime, queues)?;
                registered.queue_handle = Some(runtime.register(function).await.map_err(failed)?);
            }
            (None, Some(HostFunction::Json(function)), Kind::Json) => {
                let function = self.apply(function, runtime, queues)?;
                runtime.register(function).await.map_err(failed)?;
            }
            (None, Some(HostFunction::Queue(function)), Kind::Queue) => {
                let function = self.apply(function, runtime, queues)?;
                registered.queue_handle = Some(runtime.register(function).await.map_err(failed)?);
            }
            (None, Some(_), kind) => {
                let wanted = match kind {
                    Kind::Json => "with_function (JSON events)",
                    Kind::Queue => "with_queue_function (a mapping invokes it)",
                };
                return Err(locator.in_table(
                    self.span.clone(),
                    "name",
                    format!(
                        "the host provides `{}` with the wrong event type: use {wanted}",
                        self.name
                    ),
                ));
            }
        }
        Ok(registered)
    }

    fn backend<E, O>(
        &self,
        process: ProcessConfig,
        locator: &Locator,
    ) -> Result<ProcessBackend<E, O>, ServeError> {
        ProcessBackend::new(process)
            .map_err(|e| locator.in_table(self.span.clone(), e.field, config_message(&e)))
    }

    /// The file's settings and destinations on top of the function's own.
    fn apply<E, O>(
        &self,
        function: Function<E, O>,
        runtime: &Runtime,
        queues: &[(String, Arc<InMemoryQueue>)],
    ) -> Result<Function<E, O>, ServeError>
    where
        E: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        O: Serialize + Send + Sync + 'static,
    {
        let config = function.config().clone();
        let dummy = Locator::new(Path::new(""), "");
        let config = settings(&self.spec, config, &dummy, &self.span)?;
        let mut function = function.with_config(config);
        let Some(async_spec) = &self.spec.async_invoke else {
            return Ok(function);
        };
        if let Some(destination) = &async_spec.on_success {
            match destination_of(destination.get_ref(), runtime, queues) {
                Target::Function(d) => function = function.with_on_success(d),
                Target::Queue(d) => function = function.with_on_success(d),
                Target::None => {}
            }
        }
        if let Some(destination) = &async_spec.on_failure {
            match destination_of(destination.get_ref(), runtime, queues) {
                Target::Function(d) => function = function.with_on_failure(d),
                Target::Queue(d) => function = function.with_on_failure(d),
                Target::None => {}
            }
        }
        Ok(function)
    }
}

enum Target {
    Function(FunctionDestination),
    Queue(QueueDestination),
    None,
}

fn destination_of(
    spec: &DestinationSpec,
    runtime: &Runtime,
    queues: &[(String, Arc<InMemoryQueue>)],
) -> Target {
    if let Some(function) = &spec.function {
        return Target::Function(FunctionDestination::new(
            runtime.clone(),
            function.get_ref(),
        ));
    }
    let queue = spec.queue.as_ref().and_then(|name| {
        queues
            .iter()
            .find(|(queue, _)| queue == name.get_ref())
            .map(|(_, queue)| Arc::clone(queue))
    });
    let config = runtime.config();
    queue.map_or(Target::None, |queue| {
        let name = spec
            .queue
            .as_ref()
            .map_or("", |name| name.get_ref().as_str());
        let arn = crate::util::aws::resource_arn("sqs", &config.region, &config.account_id, name);
        Target::Queue(QueueDestination::new(queue, arn))
    })
}

/// The file's values over `config` (unset fields keep what `config` says).
fn settings(
    spec: &FunctionSpec,
    mut config: FunctionConfig,
    locator: &Locator,
    span: &std::ops::Range<usize>,
) -> Result<FunctionConfig, ServeError> {
    if let Some(memory_mb) = spec.memory_mb {
        config = config.with_memory_mb(memory_mb);
    }
    if let Some(timeout) = spec.timeout {
        config = config.with_timeout(seconds(timeout, "timeout", locator, span)?);
    }
    if let Some(max) = spec.max_concurrency {
        config = config.with_max_concurrency(max);
    }
    if let Some(async_spec) = &spec.async_invoke {
        if let Some(retries) = async_spec.max_retries {
            config = config.with_max_retries(retries);
        }
        if let Some(age) = async_spec.max_event_age {
            config = config.with_max_event_age(seconds(age, "max_event_age", locator, span)?);
        }
    }
    let invalid = |field: &str, error: &ConfigError| {
        locator.in_table(span.clone(), field, config_message(error))
    };
    if let Some(role) = &spec.role {
        let empty = serde_json::json!({ "Statement": [] });
        let document = role.policy.as_ref().unwrap_or(&empty);
        let role = ExecutionRole::from_policy(role.arn.clone(), document)
            .map_err(|e| invalid("role", &e))?;
        config = config.with_role(role);
    }
    if let Some(policy) = &spec.policy {
        for statement in parse_policy_document(policy).map_err(|e| invalid("policy", &e))? {
            config = config.with_policy_statement(statement);
        }
    }
    Ok(config)
}

/// A duration in seconds from the file (fractions allowed; negative or huge is an error).
pub(crate) fn seconds(
    value: f64,
    field: &str,
    locator: &Locator,
    span: &std::ops::Range<usize>,
) -> Result<Duration, ServeError> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        locator.in_table(
            span.clone(),
            field,
            format!("{value} is not a duration in seconds (>= 0)"),
        )
    })
}

/// A program name with a slash is a path relative to the file; a bare name is found on PATH.
fn resolve_program(base: &Path, command: &str) -> std::path::PathBuf {
    if command.contains('/') {
        base.join(command)
    } else {
        std::path::PathBuf::from(command)
    }
}

/// A constructor's error without its own field name (the error names the field already).
pub(crate) fn config_message(error: &ConfigError) -> String {
    format!("{} is invalid: allowed {}", error.value, error.allowed)
}
