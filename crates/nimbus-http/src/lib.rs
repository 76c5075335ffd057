//! nimbus-http: a nimbus [`Runtime`](nimbus_core::Runtime) over HTTP.
//!
//! One listener serves three things:
//!
//! - **The Lambda Invoke API** ([`invoke`]): `POST /2015-03-31/functions/{name}/invocations`
//!   and the `ListFunctions` / `GetFunction` reads, wire-compatible with the AWS SDKs, so boto3,
//!   the AWS CLI and the JavaScript SDK drive nimbus with only `AWS_ENDPOINT_URL_LAMBDA` set. An
//!   SDK's retry of a request (same `amz-sdk-invocation-id`) never runs a function twice.
//!   A function's policy is read and changed with `AddPermission`, `GetPolicy` and
//!   `RemovePermission`; with [`Credentials`] the server verifies SigV4 signatures and invokes
//!   as the signer, so that policies decide who may invoke what ([`auth`]).
//! - **An API gateway** ([`gateway`]): HTTP routes become API Gateway proxy events (payload 2.0
//!   by default, 1.0 per route), and the function's answer becomes the HTTP response. A route
//!   is open by default (invoking as the host); [`RouteAuth::ApiKey`] asks for one of the
//!   host's [`ApiKeys`] and [`RouteAuth::AwsIam`] for a SigV4 signature, and the function is
//!   then invoked as that caller, checked against its policy.
//! - **`/metrics`** ([`metrics`]): the runtime's counters in the OpenMetrics text format that
//!   Prometheus scrapes, read at scrape time.
//!
//! # Example
//!
//! ```no_run
//! use nimbus_core::{handler_fn, Context, Function, FunctionError, Runtime};
//! use nimbus_http::{HttpConfig, Route, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::default();
//! runtime
//!     .register(Function::new("echo", handler_fn(|v: serde_json::Value, _ctx: Context| async move {
//!         Ok::<_, FunctionError>(v)
//!     })))
//!     .await?;
//! let serving = Server::new(runtime.clone())
//!     .with_config(HttpConfig::default().with_bind("127.0.0.1:9001".parse()?))
//!     .route(Route::new("ANY", "/echo/{proxy+}", "echo")?)
//!     .bind()
//!     .await?;
//! println!("listening on http://{}", serving.local_addr());
//! serving.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! [`config`] and [`error`] are leaves; [`auth`] checks SigV4 signatures when the host gave
//! credentials; [`invoke`], [`gateway`] and [`metrics`] each handle
//! their part of the URL space; [`server`] puts them on one listener.

mod accept;
pub mod auth;
pub mod config;
mod detach;
pub mod error;
pub mod gateway;
pub mod invoke;
pub mod metrics;
mod request_id;
pub mod server;

pub use auth::Credentials;
pub use config::HttpConfig;
pub use error::HttpError;
pub use gateway::{ApiKeys, PayloadVersion, Route, RouteAuth};
pub use invoke::{LogSource, RetryCacheStats};
pub use metrics::{MappingProbe, MappingSnapshot, RuntimeCollector};
pub use server::{Server, Serving};
