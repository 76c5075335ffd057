//! nimbus-process: functions in any language, through the AWS Lambda Runtime API.
//!
//! A [`ProcessBackend`] is an instance backend of nimbus's executor whose instances are child
//! processes running a Lambda runtime: a binary built with the `lambda_runtime` crate, Python's
//! `awslambdaric`, Node.js's `aws-lambda-ric`, or a `bootstrap` of your own. They get the same
//! concurrency, scaling, timeouts, retries, mappings and metering as in-process handlers.
//!
//! - **One endpoint per instance.** Each process is started with `AWS_LAMBDA_RUNTIME_API`
//!   pointing at a loopback port of its own, so an event the executor hands an instance is taken
//!   by that process and no other: warm reuse, kills and logs land on the right process.
//! - **The init phase** runs from the spawn to the runtime's first `/next` and is billed as
//!   Lambda bills init. An `/init/error` report, or an exit before the first `/next`, is an init
//!   failure with the runtime's error type (`Runtime.ExitError` for an exit).
//! - **Invocations.** `/next` is held open until the executor hands the instance an event, with
//!   the `Lambda-Runtime-*` headers real clients need. `/response` and `/error` answer it; error
//!   reports of every shape become function errors with the reported `errorType`. A timeout
//!   kills the process (SIGKILL to its process group) and discards the instance, as does a
//!   crash (`Runtime.ExitError`).
//! - **Disposal.** Reaped idle instances get SIGTERM, then SIGKILL after
//!   [`ProcessConfig::shutdown_grace`]; shutdown leaves no child behind (dropping an instance
//!   kills its whole group).
//! - **Memory that buys CPU.** Each instance runs in a cgroup of its own with a CPU quota of
//!   `memory_mb / 1769` of a vCPU and a memory limit of `memory_mb` ([`Limits`]); an
//!   out-of-memory kill is `Runtime.OutOfMemory`; each invocation's peak memory is its
//!   `Max Memory Used`. Without writable cgroups, `RLIMIT_DATA` limits memory and CPU is not
//!   capped ([`Enforcement`]).
//! - **Layers.** A function's [`Layer`]s are merged once into a read-only [`LayerView`] shared by
//!   its instances, which see it through `PATH`, `PYTHONPATH`, `NODE_PATH`, `LD_LIBRARY_PATH`
//!   and `NIMBUS_OPT`, and at `/opt` where the host allows a mount namespace;
//!   [`ProcessConfig::provided`] runs the layers' `bootstrap`.
//! - **Logs.** stdout and stderr are captured per invocation between `START` and `END` /
//!   `REPORT` lines, emitted as `tracing` events (target `nimbus::function`), and the last 4 KB
//!   of each invocation are kept in [`LogTails`].
//!
//! # Limits
//!
//! - A host that dies without shutting down (SIGKILL) cannot stop its children; their runtimes
//!   exit on their own when their Runtime API connection breaks, as all three clients do.
//! - The ports are plain loopback TCP without authentication: one instance's process lands on
//!   its own port, but any local process that finds another port can take that instance's
//!   events. Run only code you trust, as with in-process handlers.
//! - Stopping an instance signals its process group: a process that leaves the group (`setsid`,
//!   Python's `start_new_session`, Node.js's `detached`) is not stopped with it.
//! - A host running as PID 1 (a container without an init) must reap orphans itself: a killed
//!   shell runtime's children are reparented to it. Use an init (`tini`, `docker run --init`).
//! - The CPU and memory limits and the read-only `/opt` hold for cooperative code, not against
//!   a hostile runtime running as nimbus's user (which could raise its own group's limits).
//! - Each instance accepts at most 16 Runtime API connections, and reads one request body at
//!   a time; a runtime's output is read in batches, so a runtime that writes without pause slows
//!   only its own log.

mod api;
mod backend;
mod child;
mod config;
mod instance;
mod layers;
mod limits;
mod logs;

pub use api::wire::MAX_PAYLOAD;
pub use backend::ProcessBackend;
pub use config::{ProcessConfig, RESERVED_ENV};
pub use layers::{Layer, LayerCache, LayerError, LayerSource, LayerView};
pub use limits::{Enforcement, Limits};
pub use logs::{LogTails, TAIL_BYTES};
