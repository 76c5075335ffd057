//! The server: the Invoke API, the gateway and `/metrics` on one listener.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::FromRef;
use axum::middleware;
use axum::routing::{delete, get, post};
use axum::Router;
use nimbus_core::Runtime;
use tokio::net::TcpListener;

use crate::accept::{self, Stopping};
use crate::auth::{self, Authenticator};
use crate::config::HttpConfig;
use crate::error::HttpError;
use crate::gateway::{Gateway, GatewayApi, GatewayKeys, Route, RouteAuth};
use crate::invoke::{self, InvokeApi, LogSource, RetryCache, RetryCacheStats};
use crate::metrics::{self, Exporter, MappingProbe, RuntimeCollector};

/// Builds a server for a runtime: its functions behind the Invoke API, the routes of its
/// gateway, and its metrics. [`Server::bind`] starts it.
pub struct Server {
    runtime: Runtime,
    config: HttpConfig,
    routes: Vec<Route>,
    logs: HashMap<String, Arc<dyn LogSource>>,
    mappings: Vec<(String, Arc<dyn MappingProbe>)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("routes", &self.routes)
            .field("log_sources", &self.logs.keys().collect::<Vec<_>>())
            .field(
                "mappings",
                &self.mappings.iter().map(|m| &m.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What the handlers share: each part of the URL space has its own state, taken from this
/// one by axum (`FromRef`), so that no part reaches the server above it.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) invoke: Arc<InvokeApi>,
    pub(crate) gateway: Arc<GatewayApi>,
    pub(crate) metrics: Arc<Exporter>,
    /// Set when the server has credentials: the Lambda API's routes check signatures.
    pub(crate) auth: Arc<Authenticator>,
}

impl FromRef<AppState> for Arc<InvokeApi> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.invoke)
    }
}

impl FromRef<AppState> for Arc<GatewayApi> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.gateway)
    }
}

impl FromRef<AppState> for Arc<Exporter> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.metrics)
    }
}

#[cfg(test)]
impl AppState {
    /// The state of a server with the default configuration, for unit tests.
    pub(crate) fn for_tests(runtime: Runtime) -> Self {
        Server::new(runtime)
            .into_state()
            .expect("the default configuration")
    }
}

impl Server {
    /// A server for `runtime` with the default configuration and no routes.
    pub fn new(runtime: Runtime) -> Self {
        Self {
            runtime,
            config: HttpConfig::default(),
            routes: Vec::new(),
            logs: HashMap::new(),
            mappings: Vec::new(),
        }
    }

    /// Sets the configuration.
    #[must_use]
    pub fn with_config(mut self, config: HttpConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a gateway route.
    #[must_use]
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Where `function`'s log tails come from (`X-Amz-Log-Type: Tail`), for functions whose
    /// instances write logs (a process backend's `log_tails()`). Other functions get the
    /// START, END and REPORT lines of the invocation.
    #[must_use]
    pub fn log_source(mut self, function: impl Into<String>, source: impl LogSource) -> Self {
        self.logs.insert(function.into(), Arc::new(source));
        self
    }

    /// Adds an event source mapping to `/metrics`: `probe` is read at each scrape.
    #[must_use]
    pub fn observe_mapping(mut self, name: impl Into<String>, probe: impl MappingProbe) -> Self {
        self.mappings.push((name.into(), Arc::new(probe)));
        self
    }

    /// The server as an axum [`Router`], for a host that serves it with its own routes or
    /// listener. The configuration's `bind` is not used. Served with
    /// `into_make_service_with_connect_info::<SocketAddr>()`, gateway events carry the
    /// client's address as their source IP; otherwise `127.0.0.1`.
    ///
    /// # Errors
    ///
    /// An invalid configuration or route.
    pub fn into_router(mut self) -> Result<Router, HttpError> {
        // The host's listener, not `bind`, decides who can reach the router.
        self.config.allow_non_loopback = true;
        Ok(router(self.into_state()?))
    }

    fn into_state(self) -> Result<AppState, HttpError> {
        self.config.validate()?;
        let keyed = self.routes.iter().any(|r| r.auth() == RouteAuth::ApiKey);
        if keyed && self.config.api_keys.is_empty() {
            tracing::warn!(
                "gateway routes require API keys, but there are none: they refuse every request"
            );
        }
        let gateway = Gateway::new(self.routes, self.config.gateway_max_request_bytes)?;
        let retries = RetryCache::new(self.config.retry_memory_bytes);
        let keys = GatewayKeys {
            api_keys: self.config.api_keys,
            credentials: self.config.credentials.clone().unwrap_or_default(),
            region: self.runtime.config().region.clone(),
        };
        let auth = {
            let config = self.runtime.config();
            let limits = config.payload_limits;
            Arc::new(Authenticator {
                open: self.config.credentials.is_none(),
                credentials: self.config.credentials.unwrap_or_default(),
                runtime: self.runtime.clone(),
                region: config.region.clone(),
                body_limit: limits.sync_request.max(limits.async_request),
            })
        };
        let collector = RuntimeCollector::new(self.runtime.clone())
            .with_mappings(self.mappings)
            .with_retry_memory(retries.clone());
        Ok(AppState {
            invoke: Arc::new(InvokeApi {
                runtime: self.runtime.clone(),
                logs: self.logs,
                retries,
                started: invoke::last_modified(std::time::SystemTime::now()),
            }),
            gateway: Arc::new(GatewayApi {
                runtime: self.runtime,
                table: gateway,
                keys,
            }),
            metrics: Arc::new(Exporter::new(collector)),
            auth,
        })
    }

    /// Validates the configuration and routes, binds the listener and starts serving.
    ///
    /// # Errors
    ///
    /// An invalid configuration or route, or an address that cannot be bound.
    pub async fn bind(self) -> Result<Serving, HttpError> {
        let addr = self.config.bind;
        let state = self.into_state()?;
        if !addr.ip().is_loopback() {
            if state.auth.open {
                tracing::warn!(
                    %addr,
                    "nimbus-http listens beyond loopback: requests are not authenticated, \
                     anyone who can reach this port can invoke every function"
                );
            } else {
                tracing::warn!(
                    %addr,
                    "nimbus-http listens beyond loopback: the Lambda API checks signatures, but \
                     open gateway routes and /metrics are open to anyone who can reach this port"
                );
            }
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        let stopping = Stopping::default();
        let task = tokio::spawn(accept::serve(
            listener,
            router(state.clone()),
            stopping.clone(),
        ));
        tracing::info!(addr = %local_addr, "nimbus-http listening");
        // Process instances started from now on get it as `AWS_ENDPOINT_URL_LAMBDA`.
        let url = format!("http://{local_addr}");
        state.invoke.runtime.set_lambda_endpoint(Some(url));
        Ok(Serving {
            addr: local_addr,
            stopping,
            task: Some(task),
            state,
        })
    }
}

/// The routes of the whole URL space.
fn router(state: AppState) -> Router {
    let mut lambda = Router::new()
        .route("/2015-03-31/functions", get(invoke::list_functions))
        .route("/2015-03-31/functions/", get(invoke::list_functions))
        .route("/2015-03-31/functions/{name}", get(invoke::get_function))
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(invoke::get_configuration),
        )
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::invoke),
        )
        .route(
            "/2015-03-31/functions/{name}/policy",
            get(invoke::get_policy).post(invoke::add_permission),
        )
        .route(
            "/2015-03-31/functions/{name}/policy/{sid}",
            delete(invoke::remove_permission),
        );
    // Only the Lambda API's routes are signed: the gateway and `/metrics` are not AWS APIs.
    lambda = lambda.route_layer(middleware::from_fn_with_state(
        Arc::clone(&state.auth),
        auth::authenticate,
    ));
    lambda
        .route("/metrics", get(metrics::scrape))
        .fallback(crate::gateway::serve)
        .with_state(state)
}

/// A running server.
#[derive(Debug)]
pub struct Serving {
    addr: SocketAddr,
    stopping: Stopping,
    task: Option<tokio::task::JoinHandle<()>>,
    state: AppState,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl Serving {
    /// The address the server listens on (with the port chosen when `bind` asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Tells the runtime its Invoke API is gone, unless another server took its place.
    fn forget_endpoint(&self) {
        let runtime = &self.state.invoke.runtime;
        if runtime.lambda_endpoint() == Some(format!("http://{}", self.addr)) {
            runtime.set_lambda_endpoint(None);
        }
    }

    /// What the retry memory holds now.
    pub fn retry_cache(&self) -> RetryCacheStats {
        self.state.invoke.retries.stats()
    }

    /// Stops accepting connections and resolves when every request in flight has been
    /// answered. Invocations keep running in the runtime: shut it down after this.
    pub async fn stop(mut self) {
        self.forget_endpoint();
        self.stopping.accept.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// As [`Serving::stop`], for at most `grace`: then the connections still open are closed
    /// (a stalled upload, a long invocation's caller). Their invocations keep running in the
    /// runtime. Returns whether every request was answered in time.
    pub async fn stop_within(mut self, grace: std::time::Duration) -> bool {
        self.forget_endpoint();
        self.stopping.accept.cancel();
        let Some(mut task) = self.task.take() else {
            return true;
        };
        if tokio::time::timeout(grace, &mut task).await.is_ok() {
            return true;
        }
        self.stopping.close.cancel();
        let _ = task.await;
        false
    }
}

impl Drop for Serving {
    /// A server dropped without [`Serving::stop`] stops accepting connections.
    fn drop(&mut self) {
        self.stopping.accept.cancel();
    }
}
