//! Behaviour tests of the core runtime, under Tokio's paused test clock (but the CPU
//! governor's, which measure CPU time, and the async batches', whose handler holds its thread,
//! run in real time).

mod support;

mod async_batches;
mod async_invoke;
mod async_properties;
mod backends;
mod concurrency;
mod config;
mod context;
mod error_types;
mod event_age;
mod failures;
mod governor;
mod hostile;
mod instances;
mod invoke;
mod loops;
mod payload_limits;
mod permission_seams;
mod permissions;
mod properties;
mod provisioned;
mod races;
mod records;
mod seams;
mod services;
mod shutdown;
mod unregister;
mod unrouted;
