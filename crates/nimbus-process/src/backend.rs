//! [`ProcessBackend`]: the executor backend whose instances are child processes speaking the
//! Runtime API. Its init phase is Lambda's: start the process, and the instance is ready when the
//! runtime first asks for an event (`/next`); an init error it reports, or an exit before that,
//! is an init failure.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nimbus_core::instance::{Backend, Instance};
use nimbus_core::util::aws;
use nimbus_core::{async_trait, ConfigError, Function, FunctionError, InitContext};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{Endpoint, Handles, InitSignal, Server};
use crate::child::{describe, ChildProcess, Spawn};
use crate::config::ProcessConfig;
use crate::instance::{ProcessInstance, EXIT_ERROR};
use crate::layers::{LayerSource, LayerView};
use crate::limits::{Enforcement, InstanceLimits, Limits};
use crate::logs::{LogCapture, LogTails};

/// Creates a function's instances as child processes running `config`'s command.
///
/// Events are sent to the runtime as JSON and its responses read back as the function's output
/// type; use `serde_json::Value` for both to pass any JSON through.
///
/// # Example
///
/// ```no_run
/// use nimbus_core::{Function, Runtime};
/// use nimbus_process::{ProcessBackend, ProcessConfig};
/// use serde_json::{json, Value};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let runtime = Runtime::default();
/// let backend = ProcessBackend::new(
///     ProcessConfig::new("python3")
///         .with_args(["-m", "awslambdaric"])
///         .with_handler("app.handler")
///         .with_handler_as_argument()
///         .with_working_dir("functions/orders"),
/// )?;
/// let logs = backend.log_tails();
/// let orders = runtime
///     .register(Function::<Value, Value>::with_backend("orders", backend))
///     .await?;
/// let invocation = orders.invoke_with(json!({"id": 7}), Default::default()).await;
/// if let Some(report) = invocation.report {
///     println!("{}", logs.get(report.request_id).unwrap_or_default());
/// }
/// # Ok(())
/// # }
/// ```
pub struct ProcessBackend<E, O> {
    config: Arc<ProcessConfig>,
    /// The program: the configured one, or a "provided" runtime's `bootstrap`.
    program: std::ffi::OsString,
    /// The merged view of the function's layers, built once and shared by its instances.
    layers: Option<LayerView>,
    /// What the view's links point into (the cache, directory layers' folders): made read-only
    /// in an instance's mount namespace, with the view at `/opt`.
    layer_sources: Vec<PathBuf>,
    /// Whether the view may be mounted at `/opt` for this function (asked for, and nothing it
    /// needs lies where the mounts would hide or freeze it).
    mount_opt: bool,
    /// The working directory, absolute (it is also `LAMBDA_TASK_ROOT`).
    task_root: PathBuf,
    tails: LogTails,
    types: PhantomData<fn(E) -> O>,
}

impl<E, O> std::fmt::Debug for ProcessBackend<E, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessBackend")
            .field("config", &self.config)
            .field("task_root", &self.task_root)
            .finish_non_exhaustive()
    }
}

impl<E, O> ProcessBackend<E, O> {
    /// A backend for `config`, checked field by field.
    pub fn new(config: ProcessConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let dir = match &config.working_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().map_err(|e| {
                ConfigError::new(
                    "process",
                    "working_dir",
                    e.to_string(),
                    "a readable directory",
                )
            })?,
        };
        let task_root = std::fs::canonicalize(&dir).map_err(|e| {
            ConfigError::new(
                "process",
                "working_dir",
                &dir,
                format!("an existing directory ({e})"),
            )
        })?;
        let tails = LogTails::new(config.kept_tails);
        let mut layer_sources = Vec::new();
        let layers = if config.layers.is_empty() {
            None
        } else {
            let cache = config.layer_cache.clone().unwrap_or_default();
            layer_sources.push(cache.root().to_path_buf());
            for layer in &config.layers {
                if let LayerSource::Directory(dir) = layer.source() {
                    layer_sources.push(dir.clone());
                }
            }
            let view = LayerView::build(&cache, &config.layers).map_err(|e| {
                ConfigError::new(
                    "process",
                    "layers",
                    e.to_string(),
                    "layers that can be read",
                )
            })?;
            Some(view)
        };
        let program = if config.provided {
            let own = task_root.join("bootstrap");
            if own.is_file() {
                own.into_os_string()
            } else {
                layers
                    .as_ref()
                    .and_then(LayerView::bootstrap)
                    .ok_or_else(|| {
                        ConfigError::new(
                            "process",
                            "program",
                            "provided",
                            "a `bootstrap` in the working directory or in a layer",
                        )
                    })?
                    .into_os_string()
            }
        } else {
            config.program.clone()
        };
        let mount_opt = config.mount_opt
            && layers.is_some()
            && opt_mount_is_safe(&layer_sources, &task_root, Path::new(&program));
        Ok(Self {
            program,
            layers,
            layer_sources,
            mount_opt,
            config: Arc::new(config),
            task_root,
            tails,
            types: PhantomData,
        })
    }

    /// How this host limits the instances: cgroups (CPU share and memory), or `RLIMIT_DATA`
    /// only (memory; CPU not capped), per [`ProcessConfig::limits`] and what the host allows.
    pub fn enforcement(&self) -> Enforcement {
        match self.config.limits {
            Limits::Rlimit => Enforcement::Rlimit,
            Limits::Cgroups => Enforcement::Cgroup,
            Limits::Auto => match crate::limits::cgroups_available() {
                Ok(()) if !crate::limits::fell_back() => Enforcement::Cgroup,
                _ => Enforcement::Rlimit,
            },
        }
    }

    /// The merged view of the function's layers (its path stands in for `/opt`), if it has any.
    pub fn layer_view(&self) -> Option<&LayerView> {
        self.layers.as_ref()
    }

    /// Where the last [`TAIL_BYTES`](crate::TAIL_BYTES) of each invocation's log are kept.
    pub fn log_tails(&self) -> LogTails {
        self.tails.clone()
    }
}

impl<E, O> ProcessBackend<E, O>
where
    E: Serialize + Send + 'static,
    O: DeserializeOwned + Send + 'static,
{
    /// A [`Function`] named `name` whose instances this backend creates.
    pub fn into_function(self, name: impl Into<String>) -> Function<E, O> {
        Function::with_backend(name, self)
    }
}

#[async_trait]
impl<E, O> Backend<E, O> for ProcessBackend<E, O>
where
    E: Serialize + Send + 'static,
    O: DeserializeOwned + Send + 'static,
{
    async fn create(&self, ctx: InitContext) -> Result<Box<dyn Instance<E, O>>, FunctionError> {
        let start_error = |what: &str, e: std::io::Error| {
            FunctionError::new("Runtime.InvalidEntrypoint", format!("{what}: {e}")).not_retryable()
        };
        let (endpoint, handles) = Endpoint::new();
        let Handles { events, init } = handles;
        let endpoint = Arc::new(endpoint);
        let server = Server::start(Arc::clone(&endpoint))
            .await
            .map_err(|e| start_error("cannot open the Runtime API port", e))?;
        let (logs, output) = LogCapture::new(
            ctx.function_name(),
            ctx.log_stream_name(),
            self.tails.clone(),
        )
        .map_err(|e| start_error("cannot open the log pipe", e))?;
        let env = environment(
            &self.config,
            &ctx,
            server.addr(),
            &self.task_root,
            self.layers.as_ref(),
        );
        let group_name = format!("{}-{}", ctx.function_name(), ctx.instance_number());
        let limits = InstanceLimits::new(self.config.limits, &group_name, ctx.memory_mb())
            .map_err(|why| {
                FunctionError::new(
                    "Runtime.InvalidEntrypoint",
                    format!("cannot limit the instance with cgroups: {why}"),
                )
                .not_retryable()
            })?;
        let opt = self
            .layers
            .as_ref()
            .filter(|_| self.mount_opt && crate::limits::mount_namespace_available().is_some())
            .map(LayerView::path);
        let mut child = ChildProcess::spawn(Spawn {
            launcher: limits.launcher(opt, &self.layer_sources),
            program: &self.program,
            args: &self.config.args,
            extra_arg: self
                .config
                .handler
                .as_deref()
                .filter(|_| self.config.handler_as_argument),
            working_dir: &self.task_root,
            env,
            output,
        })
        .map_err(|e| {
            let program = self.program.to_string_lossy();
            start_error(&format!("cannot start `{program}`"), e)
        })?;
        // Ready at the first `/next`; an init error or an exit before it fails the init. If the
        // init times out, this future is dropped, and with it the child (killed).
        let signal = tokio::select! {
            biased;
            signal = init => signal,
            status = child.exited() => {
                let output = logs.pending_text();
                let oom = limits.oom_kills() > 0;
                return Err(exited_in_init(status, &output, oom));
            }
        };
        if !matches!(signal, Ok(InitSignal::Ready)) {
            // Stopped and reaped before its group is removed (a group still holding a dying
            // process cannot be).
            child.stop(Duration::ZERO).await;
            limits.empty().await;
        }
        let mut limits = limits;
        limits.mark_ready();
        match signal {
            Ok(InitSignal::Ready) => Ok(Box::new(ProcessInstance {
                child,
                server,
                endpoint,
                events,
                logs,
                shutdown_grace: self.config.shutdown_grace,
                busy: false,
                answered: false,
                limits,
                types: PhantomData,
            })),
            Ok(InitSignal::Failed(report)) => Err(report.into_error()),
            // The endpoint is dropped only with the server, which lives here.
            Err(_) => Err(FunctionError::new(
                "Runtime.Unknown",
                "the Runtime API endpoint closed during init",
            )),
        }
    }
}

/// An init failure for a runtime that exited before asking for its first event; the last line
/// it wrote (usually why) is added to Lambda's message. A program that could not be run (the
/// launcher's exit 126 or 127, or 125 when it could not place it in its limits) is an invalid
/// entry point (not retried when the program was not found); a process killed at its memory limit is out of memory.
fn exited_in_init(status: std::process::ExitStatus, output: &str, oom: bool) -> FunctionError {
    let last = output.lines().rev().find(|l| !l.trim().is_empty());
    let described = describe(status);
    let message = match last {
        Some(line) => format!("Runtime exited with error: {described} (last output: {line})"),
        None => format!("Runtime exited with error: {described}"),
    };
    if oom {
        return FunctionError::new("Runtime.OutOfMemory", message);
    }
    match status.code() {
        // Not found: retrying cannot help.
        Some(127) => FunctionError::new("Runtime.InvalidEntrypoint", message).not_retryable(),
        // Not executable (perhaps being rebuilt: ETXTBSY), or not placed: may pass next time.
        Some(125 | 126) => FunctionError::new("Runtime.InvalidEntrypoint", message),
        _ => FunctionError::new(EXIT_ERROR, message),
    }
}

/// Whether mounting the view at `/opt` and the layers' folders read-only leaves what the instance
/// needs in place: nothing under `/opt` (the mount would hide it), and no folder made read-only
/// that is `/`, the temp folder, or holds the task root (Lambda's `/tmp` stays writable). Where
/// it would not, the function goes without the `/opt` mount (once warned) and reads its layers
/// through `NIMBUS_OPT` and the search paths.
fn opt_mount_is_safe(sources: &[PathBuf], task_root: &Path, program: &Path) -> bool {
    let opt = Path::new("/opt");
    let temp = std::env::temp_dir();
    let under_opt = sources
        .iter()
        .map(PathBuf::as_path)
        .chain([task_root, program])
        .any(|p| p.starts_with(opt));
    let freezes = sources.iter().any(|source| {
        source == Path::new("/") || temp.starts_with(source) || task_root.starts_with(source)
    });
    let safe = !under_opt && !freezes;
    if !safe {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "a function's layers, task root or program lie under /opt, or a layer folder holds \
                 the temp folder or the task root: its layers are not mounted at /opt"
            );
        });
    }
    safe
}

/// The instance's environment: what real runtimes read, then the function's own variables.
fn environment(
    config: &ProcessConfig,
    ctx: &InitContext,
    api: SocketAddr,
    task_root: &Path,
    layers: Option<&LayerView>,
) -> Vec<(String, String)> {
    let region = region_of(ctx.function_arn()).unwrap_or(aws::DEFAULT_REGION);
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let mut env = vec![
        ("PATH".to_owned(), path),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("TZ".to_owned(), ":UTC".to_owned()),
        ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
        ("AWS_REGION".to_owned(), region.to_owned()),
        ("AWS_DEFAULT_REGION".to_owned(), region.to_owned()),
    ];
    // The layers' folders first in the search paths, as Lambda puts /opt's; then the function's
    // own variables, which may override them, and the reserved ones (which validation keeps out
    // of the function's).
    if let Some(view) = layers {
        view.prepend_to(&mut env);
    }
    // Where the AWS SDKs in the instance send Lambda calls: nimbus's Invoke API, if served
    // (the function's own variables may point elsewhere).
    if let Some(url) = ctx.lambda_endpoint() {
        env.push(("AWS_ENDPOINT_URL_LAMBDA".to_owned(), url));
    }
    env.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    // The function's credentials, as Lambda gives it its role's: calls signed with them act as
    // the function and are checked by its role.
    if let Some(credentials) = ctx.credentials() {
        env.push(("AWS_ACCESS_KEY_ID".to_owned(), credentials.access_key_id));
        env.push((
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            credentials.secret_access_key,
        ));
    }
    let reserved = [
        ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", ctx.function_name().to_owned()),
        (
            "AWS_LAMBDA_FUNCTION_VERSION",
            ctx.function_version().to_owned(),
        ),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            ctx.memory_mb().to_string(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", ctx.log_group_name().to_owned()),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            ctx.log_stream_name().to_owned(),
        ),
        (
            "AWS_LAMBDA_INITIALIZATION_TYPE",
            if ctx.provisioned() {
                "provisioned-concurrency"
            } else {
                "on-demand"
            }
            .to_owned(),
        ),
        ("_HANDLER", config.handler.clone().unwrap_or_default()),
        ("LAMBDA_TASK_ROOT", task_root.to_string_lossy().into_owned()),
    ];
    env.extend(reserved.into_iter().map(|(k, v)| (k.to_owned(), v)));
    env
}

/// The region of a function ARN (`arn:aws:lambda:<region>:...`).
fn region_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_is_read_from_the_function_arn() {
        let arn = aws::function_arn("eu-west-1", "123456789012", "f");
        assert_eq!(region_of(&arn), Some("eu-west-1"));
        assert_eq!(region_of("nonsense"), None);
    }
}
