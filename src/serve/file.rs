//! A parsed `nimbus.toml`: read, checked (names, references, values through the existing
//! constructors) and ready to start, with the functions a host application provides by name.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use nimbus_sources::{BatchResponse, QueueBatch};
use serde_json::Value;

use super::buckets::{prepare_bucket, PreparedBucket};
use super::error::{Locator, ServeError};
use super::format::{FileSpec, FunctionSpec, RouteSpec};
use super::functions::{HostFunction, Kind, PreparedFunction};
use super::routes::prepare_route;
use super::sources::{prepare_mapping, prepare_queue, PreparedMapping, PreparedQueue};
use crate::http::Route;
use crate::{Function, Runtime};

/// A checked `nimbus.toml`; [`ServeFile::start`](crate::serve::ServeFile::start) runs it.
#[derive(Debug)]
pub struct ServeFile {
    pub(crate) locator: Locator,
    pub(crate) bind: SocketAddr,
    pub(crate) functions: Vec<PreparedFunction>,
    pub(crate) queues: Vec<PreparedQueue>,
    pub(crate) mappings: Vec<PreparedMapping>,
    pub(crate) routes: Vec<Route>,
    pub(crate) buckets: Vec<PreparedBucket>,
    /// The runtime, set at start, for the buckets' rules (built, and checked, at load).
    pub(crate) bucket_runtime: Arc<OnceLock<Runtime>>,
    pub(crate) bind_line: Option<usize>,
    pub(crate) host: HashMap<String, HostFunction>,
}

impl ServeFile {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    ///
    /// An unreadable file, or any mistake in it (with its line and field).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ServeError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ServeError {
            file: path.to_path_buf(),
            line: None,
            field: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Checks `text`, read from `path` (relative paths in it are resolved against `path`'s
    /// directory).
    ///
    /// # Errors
    ///
    /// The first mistake, naming its line and field: a syntax error, an unknown field, a value
    /// of the wrong type or out of range, a duplicate name or route, a reference to a function
    /// or queue the file does not declare, or a file that declares no function.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Self, ServeError> {
        let path = path.as_ref();
        let locator = Locator::new(path, text);
        let spec: FileSpec = toml::from_str(text).map_err(|e| locator.parse_error(&e))?;
        let base = base_dir(path);
        let bind = match &spec.http.bind {
            None => crate::http::config::DEFAULT_BIND
                .parse()
                .map_err(|e| locator.error(None, "bind", e))?,
            Some(bind) => bind
                .get_ref()
                .parse()
                .map_err(|_| locator.at(bind.span(), "bind", "not a socket address (host:port)"))?,
        };

        if spec.functions.is_empty() {
            return Err(locator.error(
                None,
                "functions",
                "the file declares no functions: add a [[functions]] table",
            ));
        }
        let kinds = function_kinds(&spec, &locator)?;
        let mut functions = Vec::new();
        for function in &spec.functions {
            let kind = kinds
                .get(function.get_ref().name.get_ref().as_str())
                .copied()
                .unwrap_or(Kind::Json);
            functions.push(PreparedFunction::prepare(function, kind, &base, &locator)?);
        }
        let mut queue_names = HashSet::new();
        let mut queues = Vec::new();
        for queue in &spec.queues {
            let name = &queue.get_ref().name;
            if !queue_names.insert(name.get_ref().clone()) {
                return Err(locator.at(
                    name.span(),
                    "name",
                    "a queue of this name is declared twice",
                ));
            }
            queues.push(prepare_queue(queue, &locator)?);
        }
        check_destinations(&spec.functions, &kinds, &queue_names, &locator)?;
        let mut mappings: Vec<PreparedMapping> = Vec::new();
        for mapping in &spec.mappings {
            let prepared = prepare_mapping(mapping, &queue_names, &locator)?;
            // Each mapping is a series of /metrics and a line of the summary: one per name.
            if mappings.iter().any(|m| m.name == prepared.name) {
                let field = if mapping.get_ref().name.is_some() {
                    "name"
                } else {
                    "function"
                };
                return Err(locator.in_table(
                    mapping.span(),
                    field,
                    format!(
                        "a mapping named `{}` is declared twice (set `name` to tell them apart)",
                        prepared.name
                    ),
                ));
            }
            mappings.push(prepared);
        }
        let mut routes = Vec::new();
        for route in &spec.routes {
            let made = prepare_route(route, &locator)?;
            if let Some(earlier) = routes.iter().find(|r| same_requests(r, &made)) {
                return Err(conflict(&locator, route, earlier));
            }
            routes.push(made);
        }
        let bucket_runtime = Arc::new(OnceLock::new());
        let mut buckets: Vec<PreparedBucket> = Vec::new();
        for bucket in &spec.buckets {
            let prepared = prepare_bucket(bucket, &base, &bucket_runtime, &locator)?;
            // Two stores on one folder would each notify, and keep, the other's objects.
            if buckets.iter().any(|b| b.root() == prepared.root()) {
                return Err(locator.at(
                    bucket.get_ref().directory.span(),
                    "directory",
                    "another bucket uses this directory: give each bucket its own",
                ));
            }
            buckets.push(prepared);
        }
        let bind_line = spec
            .http
            .bind
            .as_ref()
            .map(|b| locator.line_of(b.span().start));
        Ok(Self {
            locator,
            bind,
            functions,
            queues,
            mappings,
            routes,
            buckets,
            bucket_runtime,
            bind_line,
            host: HashMap::new(),
        })
    }

    /// Provides the function `function.name()`, which the file declares without `command`.
    #[must_use]
    pub fn with_function(mut self, function: Function<Value, Value>) -> Self {
        self.host
            .insert(function.name().to_owned(), HostFunction::Json(function));
        self
    }

    /// Provides a function that a queue mapping of the file invokes (declared without
    /// `command`).
    #[must_use]
    pub fn with_queue_function(mut self, function: Function<QueueBatch, BatchResponse>) -> Self {
        self.host
            .insert(function.name().to_owned(), HostFunction::Queue(function));
        self
    }

    /// Overrides `[http] bind` (`nimbus serve --bind`).
    #[must_use]
    pub fn with_bind(mut self, bind: SocketAddr) -> Self {
        self.bind = bind;
        self
    }

    /// The names of the functions the file declares, in order.
    pub fn function_names(&self) -> Vec<&str> {
        self.functions.iter().map(|f| f.name.as_str()).collect()
    }
}

/// The directory relative paths are resolved against, absolute: a process instance starts in
/// its own working directory, where a relative program path would mean something else.
fn base_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Checks that function names are unique and that every mapping and route names a declared
/// function; a mapping's target takes queue batches, so no route may point at it too.
fn function_kinds(spec: &FileSpec, locator: &Locator) -> Result<HashMap<String, Kind>, ServeError> {
    let mut kinds = HashMap::new();
    for function in &spec.functions {
        let name = &function.get_ref().name;
        if !valid_function_name(name.get_ref()) {
            return Err(locator.at(
                name.span(),
                "name",
                format!(
                    "`{}` is not a function name: allowed 1 to 64 characters of [A-Za-z0-9_-]",
                    name.get_ref()
                ),
            ));
        }
        if kinds.insert(name.get_ref().clone(), Kind::Json).is_some() {
            return Err(locator.at(
                name.span(),
                "name",
                "a function of this name is declared twice",
            ));
        }
    }
    for mapping in &spec.mappings {
        let function = &mapping.get_ref().function;
        match kinds.get_mut(function.get_ref().as_str()) {
            Some(kind) => *kind = Kind::Queue,
            None => return Err(unknown_function(locator, function)),
        }
    }
    let notified = spec
        .buckets
        .iter()
        .flat_map(|b| &b.get_ref().notifications)
        .map(|n| (&n.get_ref().function, "a notification"));
    let routed = spec
        .routes
        .iter()
        .map(|r| (&r.get_ref().function, "a route"));
    for (function, what) in routed.chain(notified) {
        match kinds.get(function.get_ref().as_str()) {
            Some(Kind::Json) => {}
            Some(Kind::Queue) => {
                return Err(locator.at(
                    function.span(),
                    "function",
                    format!(
                        "`{}` is a queue mapping's target (it takes queue batches); {what} needs \
                         a function that takes JSON",
                        function.get_ref()
                    ),
                ))
            }
            None => return Err(unknown_function(locator, function)),
        }
    }
    Ok(kinds)
}

/// Checks that destinations name one declared JSON function or in-memory queue.
fn check_destinations(
    functions: &[toml::Spanned<FunctionSpec>],
    kinds: &HashMap<String, Kind>,
    queues: &HashSet<String>,
    locator: &Locator,
) -> Result<(), ServeError> {
    let destinations = functions
        .iter()
        .filter_map(|f| f.get_ref().async_invoke.as_ref())
        .flat_map(|a| [&a.on_success, &a.on_failure])
        .flatten();
    for destination in destinations {
        match (
            &destination.get_ref().function,
            &destination.get_ref().queue,
        ) {
            (Some(function), None) => {
                match kinds.get(function.get_ref().as_str()) {
                    Some(Kind::Json) => {}
                    Some(Kind::Queue) => return Err(locator.at(
                        function.span(),
                        "function",
                        "a destination needs a function that takes JSON, not a mapping's target",
                    )),
                    None => return Err(unknown_function(locator, function)),
                }
            }
            (None, Some(queue)) if queues.contains(queue.get_ref()) => {}
            (None, Some(queue)) => {
                return Err(locator.at(
                    queue.span(),
                    "queue",
                    format!(
                        "no queue named `{}` is declared in [[queues]]",
                        queue.get_ref()
                    ),
                ))
            }
            _ => {
                return Err(locator.at(
                    destination.span(),
                    "function",
                    "a destination names exactly one of `function` and `queue`",
                ))
            }
        }
    }
    Ok(())
}

pub(crate) fn unknown_function(locator: &Locator, name: &toml::Spanned<String>) -> ServeError {
    locator.at(
        name.span(),
        "function",
        format!(
            "no function named `{}` is declared in [[functions]]",
            name.get_ref()
        ),
    )
}

/// Lambda's rule for function names, checked by the runtime at registration: checked here too,
/// so that the file's line is named before anything starts.
fn valid_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether two routes take the same requests: the same method (or both `ANY`) and the same
/// path shape, whatever their parameters are called.
fn same_requests(a: &Route, b: &Route) -> bool {
    a.method() == b.method() && path_shape(a.path()) == path_shape(b.path())
}

/// A path template with its parameters unnamed: `/orders/{id}` gives `/orders/{}`,
/// `/files/{proxy+}` gives `/files/{+}`.
fn path_shape(path: &str) -> String {
    path.split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if name.ends_with('+') => "{+}",
                Some(_) => "{}",
                None => segment,
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The error of a route that takes the requests of an earlier one.
fn conflict(locator: &Locator, route: &toml::Spanned<RouteSpec>, earlier: &Route) -> ServeError {
    locator.in_table(
        route.span(),
        "path",
        format!(
            "`{} {}` takes the same requests as the earlier route `{}`",
            route.get_ref().method,
            route.get_ref().path,
            earlier.route_key()
        ),
    )
}
