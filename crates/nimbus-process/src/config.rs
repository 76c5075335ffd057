//! What a process function is: the command that starts a runtime, its handler string,
//! environment and working directory, and how its instances are shut down and logged
//! ([`ProcessConfig`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use nimbus_core::instance::DISPOSE_LIMIT;
use nimbus_core::ConfigError;

use crate::layers::{Layer, LayerCache};
use crate::limits::Limits;

/// The configuration scope named in errors.
const SCOPE: &str = "process";

/// Environment variables nimbus sets for every instance, which a function's own environment may
/// not replace: the runtime would talk to the wrong endpoint or misname the function.
pub const RESERVED_ENV: &[&str] = &[
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

/// How a process function's instances are started: a command (a Lambda runtime: `bootstrap`,
/// `python -m awslambdaric`, a binary built with `lambda_runtime`, ...), the handler string the
/// runtime reads from `_HANDLER`, environment variables and a working directory (the task
/// root, `LAMBDA_TASK_ROOT`).
///
/// The child's environment is not inherited: it holds `PATH` (the host's), `LANG`, `TZ`,
/// `PYTHONUNBUFFERED=1` (so that Python's output reaches the log as it is written), the
/// variables a Lambda runtime reads ([`RESERVED_ENV`], `AWS_REGION`, `AWS_DEFAULT_REGION`),
/// the function's credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`: calls signed
/// with them act as the function, checked by its role), `AWS_ENDPOINT_URL_LAMBDA` when the
/// runtime's Invoke API is served, and what [`ProcessConfig::with_env`] adds (which wins over
/// all but [`RESERVED_ENV`]).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use nimbus_process::ProcessConfig;
///
/// let config = ProcessConfig::new("python3")
///     .with_args(["-m", "awslambdaric"])
///     .with_handler("app.handler")
///     .with_working_dir(std::env::temp_dir())
///     .with_env("TABLE", "orders")
///     .with_shutdown_grace(Duration::from_millis(300));
/// assert!(config.validate().is_ok());
/// let error = ProcessConfig::new("").validate().unwrap_err();
/// assert_eq!(error.field, "program");
/// assert!(ProcessConfig::new("x").with_working_dir("/no/such/dir").validate().is_err());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessConfig {
    /// The program to run.
    pub program: OsString,
    /// Its arguments (for `python -m awslambdaric`, the handler string is appended when
    /// [`ProcessConfig::handler_as_argument`] is set).
    pub args: Vec<OsString>,
    /// The handler string (`_HANDLER`), e.g. `app.handler`.
    pub handler: Option<String>,
    /// Whether the handler string is also passed as the last argument, as
    /// `python -m awslambdaric <handler>` and `aws-lambda-ric <handler>` expect.
    pub handler_as_argument: bool,
    /// The working directory and task root; the host's current directory if unset.
    pub working_dir: Option<PathBuf>,
    /// Environment variables of the function.
    pub env: BTreeMap<String, String>,
    /// How long an idle instance being disposed of has after SIGTERM before SIGKILL
    /// (0..=2 s, default 500 ms).
    pub shutdown_grace: Duration,
    /// How many invocation log tails are kept for callers who ask for them (default 1,000;
    /// each at most [`crate::TAIL_BYTES`]).
    pub kept_tails: usize,
    /// How instances are limited to the function's memory and its CPU share (default
    /// [`Limits::Auto`]: cgroups where writable, else `RLIMIT_DATA`).
    pub limits: Limits,
    /// The function's layers, in order (a later layer's file replaces an earlier one's).
    pub layers: Vec<Layer>,
    /// Where archives are unpacked and views built (default [`LayerCache::default_root`]).
    pub layer_cache: Option<LayerCache>,
    /// Whether the layers' view is also mounted at `/opt` (read-only, in a mount namespace of
    /// the instance's own) where the host allows it: root, `unshare` and an `/opt` folder
    /// (default true).
    pub mount_opt: bool,
    /// Lambda's "provided" runtime: the program is the `bootstrap` of the working directory, or
    /// else of the layers.
    pub provided: bool,
}

impl ProcessConfig {
    /// A function started by `program`.
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            handler: None,
            handler_as_argument: false,
            working_dir: None,
            env: BTreeMap::new(),
            shutdown_grace: Duration::from_millis(500),
            kept_tails: 1_000,
            limits: Limits::Auto,
            layers: Vec::new(),
            layer_cache: None,
            mount_opt: true,
            provided: false,
        }
    }

    /// A function on Lambda's "provided" runtime: the instance runs the `bootstrap` of the
    /// working directory, or else the one its layers carry.
    pub fn provided() -> Self {
        Self {
            provided: true,
            ..Self::new("bootstrap")
        }
    }

    /// Adds a layer after those already listed.
    #[must_use]
    pub fn with_layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Sets where layers are unpacked and merged.
    #[must_use]
    pub fn with_layer_cache(mut self, cache: LayerCache) -> Self {
        self.layer_cache = Some(cache);
        self
    }

    /// Sets whether the layers' view is mounted at `/opt` where the host allows it.
    #[must_use]
    pub fn with_mount_opt(mut self, mount: bool) -> Self {
        self.mount_opt = mount;
        self
    }

    /// Sets how instances are limited.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the program's arguments.
    #[must_use]
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the handler string (`_HANDLER`).
    #[must_use]
    pub fn with_handler(mut self, handler: impl Into<String>) -> Self {
        self.handler = Some(handler.into());
        self
    }

    /// Passes the handler string as the last argument too (the runtime interface clients of
    /// Python and Node.js take it so).
    #[must_use]
    pub fn with_handler_as_argument(mut self) -> Self {
        self.handler_as_argument = true;
        self
    }

    /// Sets the working directory, which is also the task root.
    #[must_use]
    pub fn with_working_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Sets the grace between SIGTERM and SIGKILL when an idle instance is disposed of.
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets how many invocation log tails are kept.
    #[must_use]
    pub fn with_kept_tails(mut self, kept: usize) -> Self {
        self.kept_tails = kept;
        self
    }

    /// Checks every field, naming the first that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.program.is_empty() {
            return Err(ConfigError::new(
                SCOPE,
                "program",
                &self.program,
                "a program name or path, not empty",
            ));
        }
        if let Some(handler) = &self.handler {
            if handler.is_empty() || handler.len() > 128 || handler.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    SCOPE,
                    "handler",
                    handler,
                    "1..=128 characters, no whitespace",
                ));
            }
        } else if self.handler_as_argument {
            return Err(ConfigError::new(
                SCOPE,
                "handler",
                "none",
                "a handler string, since with_handler_as_argument passes it",
            ));
        }
        if let Some(dir) = &self.working_dir {
            if !dir.is_dir() {
                return Err(ConfigError::new(
                    SCOPE,
                    "working_dir",
                    dir,
                    "an existing directory",
                ));
            }
        }
        for name in self.env.keys() {
            if RESERVED_ENV.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    SCOPE,
                    "env",
                    name,
                    format!(
                        "a name other than those nimbus sets: {}",
                        RESERVED_ENV.join(", ")
                    ),
                ));
            }
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(ConfigError::new(
                    SCOPE,
                    "env",
                    name,
                    "a non-empty name without '=' or NUL",
                ));
            }
        }
        if let Some((name, _)) = self.env.iter().find(|(_, v)| v.contains('\0')) {
            return Err(ConfigError::new(SCOPE, "env", name, "a value without NUL"));
        }
        if self.shutdown_grace > DISPOSE_LIMIT {
            return Err(ConfigError::new(
                SCOPE,
                "shutdown_grace",
                self.shutdown_grace,
                format!("0..={DISPOSE_LIMIT:?}"),
            ));
        }
        if self.layers.len() > 5 {
            return Err(ConfigError::new(
                SCOPE,
                "layers",
                self.layers.len(),
                "0..=5 layers, as Lambda allows",
            ));
        }
        if !(1..=1_000_000).contains(&self.kept_tails) {
            return Err(ConfigError::new(
                SCOPE,
                "kept_tails",
                self.kept_tails,
                "1..=1000000",
            ));
        }
        Ok(())
    }
}
