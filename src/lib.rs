//! nimbus: an embeddable serverless scheduler. Run functions in-process with the semantics of
//! AWS Lambda: synchronous and asynchronous invocation, concurrency that scales with load and
//! down to nothing when idle, failure handling that never loses an event, and metering.
//!
//! This facade re-exports the crates of the workspace: [`nimbus_core`] (the runtime, re-exported
//! at the root) and [`nimbus_sources`] (event sources and mappings, as [`sources`]).
//!
//! # Example
//!
//! ```
//! use nimbus::{handler_fn, Context, Function, FunctionError, Runtime};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::default();
//! let hello = runtime
//!     .register(Function::new(
//!         "hello",
//!         handler_fn(|name: String, ctx: Context| async move {
//!             Ok::<_, FunctionError>(format!("hello {name} from {}", ctx.function_name()))
//!         }),
//!     ))
//!     .await?;
//! assert_eq!(hello.invoke("you".into()).await?, "hello you from hello");
//! # Ok(())
//! # }
//! ```

pub use nimbus_core::*;

/// The core runtime crate, for paths that the re-exports do not cover.
pub use nimbus_core as core;

/// Event sources: queue sources, the mapping engine, in-memory sources.
pub use nimbus_sources as sources;
