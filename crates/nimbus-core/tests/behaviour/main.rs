//! Behaviour tests of the core runtime, under Tokio's paused test clock.

mod support;

mod async_invoke;
mod async_properties;
mod backends;
mod concurrency;
mod config;
mod event_age;
mod failures;
mod hostile;
mod instances;
mod invoke;
mod properties;
mod races;
mod records;
mod seams;
mod services;
mod shutdown;
mod unregister;
mod unrouted;
