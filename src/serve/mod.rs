//! `nimbus serve nimbus.toml` (feature `serve`): one file declares functions (process instances
//! from a `command`, or in-process functions the host provides by name), their async settings
//! and destinations, in-memory queues, queue mappings (in-memory, Redis, PostgreSQL, NATS),
//! object buckets in watched directories with their notification rules, gateway routes and the
//! HTTP listener; [`ServeFile`] checks it and starts it as a
//! [`Platform`].
//!
//! Every mistake is a [`ServeError`] naming the line and the field.
//!
//! ```
//! use nimbus::serve::ServeFile;
//!
//! let text = "[[functions]]\nname = \"orders\"\nmemory_mb = 1\n";
//! let error = ServeFile::parse(text, "nimbus.toml").unwrap_err();
//! assert_eq!((error.line, error.field.as_str()), (Some(3), "memory_mb"));
//! ```
//!
//! # Layout
//!
//! [`format`](mod@format) is the file's shape and [`error`] its errors; `file` checks a parsed file,
//! `functions`, `destinations`, `sources`, `buckets` and `routes` build each part, and `platform` runs
//! them.

mod buckets;
mod destinations;
pub mod error;
mod file;
pub mod format;
mod functions;
mod platform;
mod routes;
mod sources;

pub use error::ServeError;
pub use file::ServeFile;
pub use platform::{Platform, StopReport};
