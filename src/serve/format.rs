//! The file format of `nimbus serve`: what a `nimbus.toml` may say, as serde structs. Unknown
//! fields are errors; names that are checked later (functions, queues) keep their spans, so that
//! an error names the line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// The HTTP listener.
    #[serde(default)]
    pub http: HttpSpec,
    /// The functions, each a `[[functions]]` table.
    #[serde(default)]
    pub functions: Vec<Spanned<FunctionSpec>>,
    /// In-memory queues, each a `[[queues]]` table.
    #[serde(default)]
    pub queues: Vec<Spanned<QueueSpec>>,
    /// Event source mappings, each a `[[mappings]]` table.
    #[serde(default)]
    pub mappings: Vec<Spanned<MappingSpec>>,
    /// Gateway routes, each a `[[routes]]` table.
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSpec>>,
    /// Object buckets in watched directories, each a `[[buckets]]` table.
    #[serde(default)]
    pub buckets: Vec<Spanned<BucketSpec>>,
}

/// `[http]`: where the Lambda API, the gateway and `/metrics` listen.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSpec {
    /// `host:port` (default `127.0.0.1:9001`; port 0 picks a free one).
    pub bind: Option<Spanned<String>>,
}

/// `[[functions]]`: a process instance (`command`) or a function the host provides by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// The function's name.
    pub name: Spanned<String>,
    /// The program of a process instance; none for a function the host provides.
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Its working directory (relative to the file's directory).
    pub working_dir: Option<String>,
    /// The handler string (`_HANDLER`).
    pub handler: Option<String>,
    /// Whether the handler is also the last argument (`python -m awslambdaric app.handler`).
    #[serde(default)]
    pub handler_as_argument: bool,
    /// Memory, in MB (128..=10240).
    pub memory_mb: Option<u32>,
    /// Timeout, in seconds (fractions allowed).
    pub timeout: Option<f64>,
    /// Reserved concurrency.
    pub max_concurrency: Option<u32>,
    /// Layers, in order.
    #[serde(default)]
    pub layers: Vec<LayerSpec>,
    /// Asynchronous invocation: retries, age and destinations.
    #[serde(rename = "async")]
    pub async_invoke: Option<AsyncSpec>,
    /// The execution role: what the function's code may reach.
    pub role: Option<RoleSpec>,
    /// The function policy (who may invoke it), as IAM's JSON: `{ Statement = [...] }`.
    pub policy: Option<serde_json::Value>,
}

/// `[functions.role]`: an execution role, its ARN and its policy document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// `arn:aws:iam::<account>:role/<name>`.
    pub arn: String,
    /// `{ Statement = [{ Effect = "Allow", Action = [...], Resource = [...] }] }`.
    #[serde(default)]
    pub policy: Option<serde_json::Value>,
}

/// A layer: a directory or a `.zip` archive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// The layer's name.
    pub name: String,
    /// Its version (default 1).
    #[serde(default = "first_version")]
    pub version: u32,
    /// A directory or a `.zip` file (relative to the file's directory).
    pub path: String,
}

fn first_version() -> u32 {
    1
}

/// `[functions.async]`: asynchronous invocation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsyncSpec {
    /// Retries after a function error (0..=2).
    pub max_retries: Option<u32>,
    /// The oldest an event may get, in seconds.
    pub max_event_age: Option<f64>,
    /// Where successes go.
    pub on_success: Option<Spanned<DestinationSpec>>,
    /// Where failures go.
    pub on_failure: Option<Spanned<DestinationSpec>>,
}

/// A destination: another function (invoked asynchronously with the invocation record) or an
/// in-memory queue (sent the record as JSON).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// A function of this file.
    pub function: Option<Spanned<String>>,
    /// An in-memory queue of this file.
    pub queue: Option<Spanned<String>>,
}

/// `[[queues]]`: an in-memory queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// The queue's name.
    pub name: Spanned<String>,
    /// Visibility timeout, in seconds.
    pub visibility_timeout: Option<f64>,
    /// How many messages it may hold.
    pub capacity: Option<usize>,
}

/// `[[mappings]]`: a queue drained by a function. Exactly one of `queue`, `redis`, `postgres`
/// and `nats` names the source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// The mapping's name (default `<function>-<source>`).
    pub name: Option<String>,
    /// The function it invokes.
    pub function: Spanned<String>,
    /// An in-memory queue of this file.
    pub queue: Option<Spanned<String>>,
    /// A Redis Stream with a consumer group.
    pub redis: Option<BrokerSpec>,
    /// A PostgreSQL queue table.
    pub postgres: Option<BrokerSpec>,
    /// A NATS JetStream work-queue stream.
    pub nats: Option<BrokerSpec>,
    /// Records per invocation.
    pub batch_size: Option<usize>,
    /// How long to gather a batch, in seconds.
    pub batching_window: Option<f64>,
    /// Concurrent batches at most.
    pub max_concurrency: Option<u32>,
    /// Whether the function reports partial failures.
    pub report_batch_item_failures: Option<bool>,
    /// Event filters (Lambda's filter pattern JSON).
    #[serde(default)]
    pub filters: Vec<String>,
}

/// A broker queue: its URL and its name (stream key, table or stream).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSpec {
    /// `redis://…`, `postgres://…` or `nats://…`.
    pub url: String,
    /// The stream key (Redis), queue name (PostgreSQL) or stream (NATS).
    pub name: String,
}

/// `[[routes]]`: an HTTP route of the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// `GET`, `POST`, …, or `ANY`.
    pub method: String,
    /// The path template (`/orders/{id}`, `/files/{proxy+}`).
    pub path: String,
    /// The function it invokes.
    pub function: Spanned<String>,
    /// The event's payload format: `"1.0"` or `"2.0"` (default).
    pub payload: Option<Spanned<String>>,
    /// A token bucket in front of the route.
    pub throttle: Option<ThrottleSpec>,
}

/// A route's throttle: `rate` requests per second, bursts of `burst`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSpec {
    /// Requests per second.
    pub rate: u32,
    /// The bucket's size.
    pub burst: u32,
}

/// `[[buckets]]`: a bucket of a directory object store: the folder `<directory>/<name>`,
/// watched, so that a file written there by any program is an object created.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketSpec {
    /// The bucket's name (the events' `s3.bucket.name`).
    pub name: Spanned<String>,
    /// The store's root (relative to the file's directory); the bucket is its sub-folder
    /// `name`.
    pub directory: Spanned<String>,
    /// Quiet time after a file's last change before it is notified, in seconds (default 0.2).
    pub settle: Option<f64>,
    /// Where its events go, each a `[[buckets.notifications]]` table.
    #[serde(default)]
    pub notifications: Vec<Spanned<NotificationSpec>>,
}

/// `[[buckets.notifications]]`: which events of which keys invoke which function.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSpec {
    /// The rule's id (the events' `configurationId`; default `<function>-<n>`).
    pub id: Option<String>,
    /// Event types: `s3:ObjectCreated:*`, `s3:ObjectCreated:Put`, `s3:ObjectRemoved:*`,
    /// `s3:ObjectRemoved:Delete`.
    pub events: Vec<String>,
    /// Keys must start with this.
    #[serde(default)]
    pub prefix: String,
    /// Keys must end with this.
    #[serde(default)]
    pub suffix: String,
    /// The function invoked asynchronously with S3's event, `{"Records": [...]}`.
    pub function: Spanned<String>,
}
