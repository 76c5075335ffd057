//! Behaviour tests of queue sources and queue mappings, under Tokio's paused test clock.

mod support;

mod filters;
mod mapping;
mod memory;
mod properties;
